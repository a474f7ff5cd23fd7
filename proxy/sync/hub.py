"""Each environment's sync document, rendered once per content change and shared by every
stream of that environment (DESIGN §9).

A store change marks its environment and renders it on the next loop turn when nothing was
rendered in the last ``coalesce_s`` (a lone push goes out at once), else when that window
ends: changes within it make one document, like SSE rounds. A render whose text equals the current one is
dropped: providers fire CONFIGURATION_CHANGED on every message. A document over the gRPC
message limit is refused with a log line and a metric; the last good one stays.

Streams hold a :class:`Watch`: an event set when their environment has a new document (or
the stream must end) and no queue: a slow consumer, blocked in its write, then sends the
latest document only, so it holds one document however many changes it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from proxy.model import Change, FlagSet
from proxy.store import Store
from proxy.sync import sync_pb2
from proxy.sync.caller import Caller
from proxy.sync.document import ShapeMemo, render
from proxy.sync.metrics import SyncStats

log = logging.getLogger("flagedge.sync")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default receive limit, every provider's


@dataclass(frozen=True, slots=True)
class Rendered:
    """One environment's document and the responses carrying it (built once, shared)."""

    env: str
    text: str
    stream: sync_pb2.SyncFlagsResponse
    fetch: sync_pb2.FetchAllFlagsResponse
    size: int


@dataclass(eq=False, slots=True)
class Watch:
    """An open stream's view of the hub: wake-ups and, when it must end, how."""

    caller: Caller
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    end: tuple[grpc.StatusCode, str] | None = None

    def stop(self, code: grpc.StatusCode, details: str) -> None:
        if self.end is None:
            self.end = (code, details)
        self.wake.set()


def build(env: str, text: str) -> Rendered:
    stream = sync_pb2.SyncFlagsResponse(flag_configuration=text)
    fetch = sync_pb2.FetchAllFlagsResponse(flag_configuration=text)
    return Rendered(env=env, text=text, stream=stream, fetch=fetch, size=stream.ByteSize())


class DocumentHub:
    def __init__(self, store: Store, stats: SyncStats, *, coalesce_s: float = 0.1,
                 max_bytes: int = MAX_MESSAGE_BYTES,
                 renderer: Callable[[FlagSet, str, ShapeMemo], str] = render):
        self.store, self.stats = store, stats
        self.coalesce_s, self.max_bytes, self.renderer = coalesce_s, max_bytes, renderer
        self._docs: dict[str, Rendered] = {}
        self._pending: dict[str, FlagSet] = {}  # env -> newest set not rendered yet
        self._timer: asyncio.TimerHandle | None = None
        self._flushed_at = float("-inf")  # loop time of the last flush
        self._watches: dict[str, set[Watch]] = {}
        self._memos: dict[str, ShapeMemo] = {}  # env -> its flags' stripped forms
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(self._on_change)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- documents ---------------------------------------------------------------------------
    def current(self, env: str) -> Rendered | None:
        """The environment's document now (rendered on first use), None without rules."""
        doc = self._docs.get(env)
        if doc is None:
            flag_set = self._pending.pop(env, None) or self.store.get(env)
            if flag_set is not None:
                self._render(env, flag_set)
                doc = self._docs.get(env)
        return doc

    def _on_change(self, change: Change, flag_set: FlagSet) -> None:
        if change.env not in self._docs and change.env not in self._watches:
            return  # nobody asked yet: the first caller renders it
        self._pending[change.env] = flag_set
        if self._timer is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, self._flushed_at + self.coalesce_s - loop.time())
            self._timer = loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._flushed_at = asyncio.get_running_loop().time()
        pending, self._pending = self._pending, {}
        for env, flag_set in pending.items():
            if self._render(env, flag_set):
                for watch in tuple(self._watches.get(env, ())):
                    watch.wake.set()

    def _render(self, env: str, flag_set: FlagSet) -> bool:
        """Render ``env``'s document; True when it changed (streams have something to send)."""
        try:
            text = self.renderer(flag_set, env, self._memos.setdefault(env, {}))
        except Exception:  # a bug here must not end every stream: keep the last good one
            log.exception("sync: rendering the document of env %r failed; the last one stays",
                          env)
            return False
        self.stats.rendered[env] = flag_set.version
        old = self._docs.get(env)
        if old is not None and old.text == text:
            return False
        doc = build(env, text)
        if doc.size > self.max_bytes:
            self.stats.too_large(env)
            log.error("sync: env %r version %d gives a %d-byte document, over the %d-byte "
                      "gRPC message limit providers accept; not sent (the last good document "
                      "stays)", env, flag_set.version, doc.size, self.max_bytes)
            return False
        self._docs[env] = doc
        return True

    # -- streams -------------------------------------------------------------------------------
    def watch(self, caller: Caller) -> Watch:
        watch = Watch(caller)
        self._watches.setdefault(caller.env, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.caller.env)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.caller.env]

    def watches(self) -> list[Watch]:
        return [w for ws in self._watches.values() for w in ws]

    def stop_all(self, code: grpc.StatusCode, details: str) -> None:
        for watch in self.watches():
            watch.stop(code, details)
