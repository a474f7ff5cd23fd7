"""The UI's live channel (DESIGN §12, issue 25): ``GET /ui/events``, one SSE stream per open
page, that says ``event: changed`` whenever something the pages show changed for the
session's environment, so htmx re-fetches the regions that listen (``hx-trigger=
"sse:changed"``, base.html) without a reload.

Where the news comes from (never a Redis read per connection):

- the served rules: the proxy's own ``Store`` subscription (``rules`` with the version);
- change requests (created, approved, rejected, applied, cancelled, expired, on any replica)
  and applied changes, which rollout records only ever change with (storage/rollouts.py):
  the environment's outbox stream ``flagedge:{ENV}:outbox``, which every such script appends
  to in the same script as the write (``requests``; a change entry is ``rules``). Read with a
  blocking ``XREAD`` from the last id seen: no polling, and an entry is never missed;
- insight counts: no write leaves a stream entry or a version, so once a second (the
  ``XREAD``'s block timeout) one read-only script sums today's exposure counts
  (``flagedge:{ENV}:xd:{YYYYMMDD}``, written by every flush on every replica); a total that
  moved is ``counts``.

The outbox and counts are watched by ONE task per worker per environment that has UI
listeners (:class:`EnvWatcher`), started with its first listener and stopped with its last
(and by :meth:`LiveChannel.close`, on the app's shutdown: ``UiRoutes.close``). Each
connection holds only a :class:`Pending` (at most one entry per kind: its bounded queue) and
sends at most one event per ``COALESCE_S``. The response is sse-starlette's (the streams'
library): heartbeat comments every ``PING_S``, the end of the stream when uvicorn shuts down,
the client's disconnect.

A stream's first event says everything changed (``"opened": true``): a page is rendered
before its stream opens, and a dropped stream reconnects seconds later; a write in either gap
precedes what the watcher reads, so only that first re-fetch shows it.

A stream needs a live session (no CSRF: a GET that changes nothing); without one it is 401,
never the sign-in redirect (EventSource would follow it and retry forever). Before each event
the session is checked again (expiry, key, revocation on any replica): a signed-out session's
stream ends instead of sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from proxy.model import Change, FlagSet
from proxy.storage import insights, layout
from proxy.storage.replies import text
from proxy.storage.url import async_client
from proxy.ui import sessions
from proxy.ui.routes import UiRoutes

log = logging.getLogger("flagedge.ui")

EVENT = "changed"
# What an event can say changed, in the order its JSON lists them.
RULES, REQUESTS, ROLLOUTS, COUNTS = "rules", "requests", "rollouts", "counts"
KINDS = (RULES, REQUESTS, ROLLOUTS, COUNTS)
COALESCE_S = 0.3  # at most ~3 events a second per connection: a burst is one re-fetch
PING_S = 15  # heartbeat comment interval
RETRY_MS = 3000  # EventSource's reconnect delay after a stream ends (shutdown, failover)
POLL_S = 1.0  # XREAD's block timeout: also how often the counts total is read
READ_COUNT = 32  # outbox entries per XREAD
BACKOFF_S = (1.0, 2.0, 5.0)  # a watcher's waits after consecutive Redis failures
POSITION_WAIT_S = 2.0  # how long a first stream waits for its watcher to be positioned
STOP_WAIT_S = 3.0  # close(): how long to wait for watchers (a lost cancel: their loop ends)

# Today's exposure total for one environment (KEYS: the day hash). Read-only and O(fields)
# inside Redis, one small reply: cheaper than any client-side read of the counts.
COUNTS_TOTAL_LUA = """
local total = 0
local values = redis.call('HVALS', KEYS[1])
for i = 1, #values do total = total + (tonumber(values[i]) or 0) end
return tostring(total)
"""


@dataclass(slots=True)
class Pending:
    """What one connection has not been told yet: at most one entry per kind, the newest rules
    version kept, so a burst of a thousand writes is one small event and a stalled reader costs
    a few bytes, never a queue that grows."""

    kinds: set[str] = field(default_factory=set)
    version: int | None = None

    def note(self, kind: str, version: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kinds.add(kind)
        if version is not None and (self.version is None or version > self.version):
            self.version = version

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def take(self) -> dict[str, Any] | None:
        """The event's data, and nothing pending afterwards; None when nothing was noted."""
        if not self.kinds:
            return None
        data: dict[str, Any] = {"what": [k for k in KINDS if k in self.kinds]}
        if self.version is not None:
            data["version"] = self.version
        self.kinds, self.version = set(), None
        return data


def opened_event() -> ServerSentEvent:
    """Every stream's first event: everything may have changed. The page was rendered before
    its stream opened (and a dropped stream reconnects seconds later); what changed in that
    gap came before the watcher's position, so no later event would tell it. One re-fetch
    of the page's live regions per open is what never missing it costs."""
    return ServerSentEvent(data=orjson.dumps({"what": list(KINDS), "opened": True}).decode(),
                           event=EVENT)


def send_at(last_sent: float | None, now: float, interval: float = COALESCE_S) -> float:
    """When the next event may go: at once after a quiet spell, else ``interval`` after the
    last one (what is noted meanwhile joins it)."""
    return now if last_sent is None else max(now, last_sent + interval)


def outbox_kind(fields: Mapping[Any, Any]) -> tuple[str, int | None] | None:
    """What an outbox entry says changed: a request state change (``request``) is
    ``requests``, an applied change (``change``, with its version) ``rules``; else None."""
    values = {text(k): text(v) for k, v in fields.items() if k in (b"type", "type",
                                                                   b"version", "version")}
    kind = values.get("type")
    if kind == "request":
        return REQUESTS, None
    if kind == "change":
        version = values.get("version", "")
        return RULES, int(version) if version.isdigit() else None
    return None


class Listener:
    """One open stream: its session and what it has not been told yet."""

    __slots__ = ("_ready", "closed", "env", "pending", "session")

    def __init__(self, session: sessions.Session):
        self.session = session
        self.env = session.env
        self.pending = Pending()
        self.closed = False
        self._ready = asyncio.Event()

    def note(self, kind: str, version: int | None = None) -> None:
        if not self.closed:
            self.pending.note(kind, version)
            self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def wait(self, timeout: float) -> bool:
        """True once something is pending (or the listener closed); False after ``timeout``."""
        if not self.pending and not self.closed:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return False
        self._ready.clear()
        return True


class EnvWatcher:
    """The one task per worker and environment that reads the outbox and the counts total
    while that environment has listeners; it tells them through ``channel.note``."""

    def __init__(self, channel: LiveChannel, env: str):
        self.channel, self.env = channel, env
        self.task: asyncio.Task[None] | None = None
        # Set once the watcher knows where the outbox ends (or could not ask): a stream's
        # first listener waits for it, so a write made after its stream opened is never
        # taken for one from before.
        self.positioned = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(),
                                                           name=f"ui-live:{self.env}")

    async def run(self) -> None:
        env, channel = self.env, self.channel
        outbox = layout.outbox_key(env)
        failures = 0
        last_id: str | None = None
        total: str | None = None
        # The exit even when a cancel is lost (proxy/server/tasks.py): a watcher that is no
        # longer the environment's (its listeners left) ends at its next turn.
        while channel.watchers.get(env) is self:
            try:
                client = channel.client()
                if last_id is None:  # from now on: what came before is on the page already
                    newest = await client.xrevrange(outbox, count=1)
                    last_id = text(newest[0][0]) if newest else "0-0"
                    total = await self._counts_total(client)
                    self.positioned.set()
                reply = await client.xread({outbox: last_id}, count=READ_COUNT,
                                           block=int(POLL_S * 1000))
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        last_id = text(entry_id)
                        found = outbox_kind(fields)
                        if found is not None:
                            channel.note(env, *found)
                now_total = await self._counts_total(client)
                if now_total != total:
                    total = now_total
                    channel.note(env, COUNTS)
                failures = 0
            except (RedisError, OSError) as exc:
                self.positioned.set()  # the stream goes on without: rules changes still come
                if failures == 0:
                    log.warning("ui live: watching %s failed (%s): retrying; rules changes "
                                "still reach the pages", env, type(exc).__name__)
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1

    async def _counts_total(self, client: Any) -> str:
        day = insights.day_key(self.env, insights.day_of(time.time()))
        return text(await client.eval(COUNTS_TOTAL_LUA, 1, day))


class LiveChannel:
    """The listeners of this worker, by environment, and their watchers."""

    def __init__(self, ui: UiRoutes):
        self.ui = ui
        self.listeners: dict[str, set[Listener]] = {}
        self.watchers: dict[str, EnvWatcher] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled, not yet done: held
        self._redis: Any = None
        # Only Redis holds requests, rollouts and counts: a rules file has no watcher.
        self.watch_redis = ui.settings.flags is None and bool(ui.settings.redis)
        self._unsubscribe = ui.store.subscribe(self._on_rules)

    def routes(self) -> list[BaseRoute]:
        return [Route("/ui/events", self.events, methods=["GET"])]

    # -- the stream ----------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):  # no redirect: EventSource would loop on it
            return Response("sign in first", 401, media_type="text/plain",
                            headers={"Cache-Control": "no-store"})
        listener = self.open(who.session)
        try:
            watcher = self.watchers.get(listener.env)
            if watcher is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.positioned.wait(), POSITION_WAIT_S)
        except BaseException:
            self.release(listener)
            raise
        return LiveResponse(self._frames(listener), lambda: self.release(listener))

    async def _frames(self, listener: Listener) -> AsyncIterator[ServerSentEvent]:
        loop = asyncio.get_running_loop()
        last_sent: float | None = None
        try:
            yield ServerSentEvent(retry=RETRY_MS)
            yield opened_event()
            while not listener.closed:
                left = listener.session.expires - time.time()
                if left <= 0:
                    break  # the session ended: so does its stream
                if not await listener.wait(min(left, PING_S)):
                    continue  # nothing yet (sse-starlette sends the heartbeats)
                if listener.closed:
                    break
                await asyncio.sleep(send_at(last_sent, loop.time()) - loop.time())
                if not await self.still_signed_in(listener.session):
                    break
                data = listener.pending.take()
                if data is not None:
                    last_sent = loop.time()
                    yield ServerSentEvent(data=orjson.dumps(data).decode(), event=EVENT)
        finally:
            self.release(listener)

    async def still_signed_in(self, session: sessions.Session) -> bool:
        """As ``UiRoutes.signed_in`` decides it for a page: not expired, its key still there
        (and of this environment), not signed out on any replica."""
        if session.expires <= time.time():
            return False
        record = self.ui.keyring.by_id(session.key_id)
        if self.ui.actor(session.key_id, record.name if record else "") is None:
            return False
        if record is not None and record.env != session.env:
            return False
        return not await self.ui.is_revoked(session.sid)

    # -- listeners and watchers ----------------------------------------------------------
    def open(self, session: sessions.Session) -> Listener:
        listener = Listener(session)
        self.listeners.setdefault(session.env, set()).add(listener)
        if self.watch_redis and session.env not in self.watchers:
            watcher = self.watchers[session.env] = EnvWatcher(self, session.env)
            watcher.start()
        return listener

    def release(self, listener: Listener) -> None:
        listener.close()
        envs = self.listeners.get(listener.env)
        if envs is not None:
            envs.discard(listener)
            if not envs:
                del self.listeners[listener.env]
                watcher = self.watchers.pop(listener.env, None)
                if watcher is not None and watcher.task is not None:
                    self._stopping.add(watcher.task)
                    watcher.task.add_done_callback(self._stopping.discard)
                    watcher.task.cancel()

    def note(self, env: str, kind: str, version: int | None = None) -> None:
        for listener in list(self.listeners.get(env, ())):
            listener.note(kind, version)

    def _on_rules(self, change: Change, flag_set: FlagSet) -> None:
        """Store subscriber: synchronous and non-blocking (it only marks listeners)."""
        self.note(change.env, RULES, flag_set.version)

    def client(self) -> Any:
        """The watchers' asyncio Redis client, made with the first watcher (lazily: a worker
        whose UI nobody opens never connects)."""
        if self._redis is None:
            settings = self.ui.settings
            self._redis = async_client(settings.redis, cluster=settings.cluster)
        return self._redis

    async def close(self) -> None:
        """On the app's shutdown: every stream ends, every watcher stops, the client closes."""
        self._unsubscribe()
        for envs in list(self.listeners.values()):
            for listener in list(envs):
                listener.close()
        self.listeners.clear()
        tasks = [w.task for w in self.watchers.values() if w.task is not None]
        tasks += [t for t in self._stopping if not t.done()]
        self.watchers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


class LiveResponse(EventSourceResponse):
    """sse-starlette's stream (heartbeats, the end on shutdown, the client's disconnect) that
    releases its listener however it ends, even before its generator ever ran."""

    def __init__(self, frames: AsyncIterator[ServerSentEvent], on_end: Callable[[], None]):
        super().__init__(frames, ping=PING_S, sep="\n")
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()


def routes(ui: UiRoutes) -> list[BaseRoute]:
    """The live channel's route; the channel is closed with the UI (``UiRoutes.close``)."""
    channel = LiveChannel(ui)
    ui.on_close.append(channel.close)
    return channel.routes()
