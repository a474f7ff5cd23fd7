"""Change fan-out to SSE connections.

The store calls :meth:`FanOut.on_change` synchronously on every publish; it records the change
in the :class:`~proxy.streams.history.ChangeLog` and hands it to one task per environment, which
encodes each change once per stream kind (once per distinct context for the evaluated
stream) and pushes the bytes into every connection's bounded queue without ever awaiting a
connection. A connection whose queue is full drops what it holds and is marked for a
snapshot: when its reader next asks, it gets the newest state in one event (a notification,
a ``put``), so a stalled reader costs a bounded amount of memory and nobody else waits.

The fan-out owns the connections and hands each one what it uses (its limits, counters, the
snapshot builder of :mod:`proxy.streams.snapshots`), never itself; what came before a new
connection is :mod:`proxy.streams.resume`'s, given the store, the ring, the Redis history and
the snapshot builders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import orjson

from proxy.evaluation.engine import evaluate as engine_evaluate
from proxy.evaluation.engine import evaluate_all as engine_evaluate_all
from proxy.model import Change, EvaluationResult, FlagSet
from proxy.store import Store
from proxy.streams import resume
from proxy.streams.boundaries import BOUNDARY_RECHECK_S, BOUNDARY_SLOT_S, BoundaryRound, timed_flags
from proxy.streams.connection import CapExceeded, Connection, Limits, StreamKind
from proxy.streams.frames import (
    Counters,
    Propagation,
    StreamStats,
    count,
    diff_frames,
    exposures_of,
    notification,
    rules_entry,
)
from proxy.streams.history import ChangeLog, Entry, entry_from_change
from proxy.streams.resume import History
from proxy.streams.snapshots import Evaluate, EvaluateAll, Render, Snapshots, plain_render

log = logging.getLogger("flagedge.fanout")


def merge_changes(changes: list[Change], fs: FlagSet) -> Change:
    """Consecutive non-reset changes as one change to ``fs`` (the newest): keys whose final
    state is present are upserted, the others deleted (deletes are idempotent)."""
    touched: set[str] = set()
    for c in changes:
        touched |= c.upserted
        touched |= c.deleted
    flags = fs.flags
    return dataclasses.replace(
        changes[-1],
        upserted=frozenset(k for k in touched if k in flags),
        deleted=frozenset(k for k in touched if k not in flags),
        evaluators_changed=any(c.evaluators_changed for c in changes),
        metadata_changed=any(c.metadata_changed for c in changes))


# The fan-out holds the event loop for at most about this long before it lets requests run
# (checked per connection: one connection's push or evaluation is a few to tens of us).
SLICE_S = 0.0001
# How it lets them run: a timer due at once. ``sleep(0)`` would requeue this task ahead of
# the requests, since it is queued before the loop polls the sockets that bring them; a due
# timer fires only after that poll (on asyncio and on uvloop), so the step it wakes is queued
# behind the steps of those requests.
_YIELD_S = 1e-9
_clock = time.perf_counter  # a module global, so that tests can drive it


async def yield_to_requests() -> float:
    """Let what is ready on the event loop run first; the start of the next slice."""
    await asyncio.sleep(_YIELD_S)
    return _clock()


def _due(conn: Connection, change: Change, fs: FlagSet) -> bool:
    """The connection has not seen this change: a newer version, or a reset to a state it
    does not hold (a re-publish after Redis lost its data numbers anew from 1; after a
    failover to a lagging replica, Redis's version N can be another write than ours)."""
    return conn.version < change.version or (change.reset and conn.state_id != fs.state_id)


class FanOut:
    def __init__(self, store: Store, changelog: ChangeLog | None = None, *,
                 max_queue: int = 64, max_queue_bytes: int = 1 << 20, max_backlog: int = 32,
                 coalesce_s: float = 0.0,
                 max_per_key: int = 10_000, max_total: int = 20_000,
                 max_per_address: int = 100,
                 engine: tuple[Evaluate, EvaluateAll] = (engine_evaluate, engine_evaluate_all),
                 render: Render = plain_render, stats: Counters | None = None,
                 history: History | None = None, boundary_jitter: float = 3.0):
        self.store = store
        self.changelog = changelog or ChangeLog()
        # Events (or bytes) queued per connection before it is owed a snapshot instead.
        self.limits = Limits(max_queue, max_queue_bytes)
        self.max_backlog = max_backlog  # changes waiting for the fan-out before it skips ahead
        # Throttle per environment (leading + trailing edge): a change after a quiet spell of
        # this many seconds fans out at once; later ones within it are merged into one round.
        self.coalesce_s = coalesce_s
        self.max_per_key = max_per_key
        self.max_total = max_total
        # Beside the key's cap: a client key ships in every browser, so its cap alone would
        # let one holder take every stream from that key's real users.
        self.max_per_address = max_per_address
        self.engine = engine
        self.render = render  # EvaluationResult -> OFREP item (the bulk endpoint's shape)
        self.stats: Counters = stats if stats is not None else StreamStats()
        self.snapshots = Snapshots(store, render, engine[1], self.stats)
        self.propagation = Propagation()
        self.rejected: dict[str, int] = {}  # cap -> connections refused
        self.history = history  # change-stream fallback for resume; None = ring only
        # Seconds over which the streams of an environment are told of a time boundary
        # (each its own random share: clients do not all re-fetch at once).
        self.boundary_jitter = boundary_jitter
        self._boundary_tasks: dict[str, asyncio.Task[None]] = {}  # one timer per environment
        # Made once and shared by every connection (a bound method per open would not be).
        self._snapshot_for = self.snapshots.snapshot
        self._conns: dict[str, dict[StreamKind, set[Connection]]] = {}
        self._by_key: dict[str, set[Connection]] = {}
        self._by_address: dict[str, int] = {}  # client address -> open connections
        self._address_of: dict[Connection, str] = {}
        self._total = 0
        self._inbox: dict[str, asyncio.Queue[tuple[Change, FlagSet, Entry]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self.on_change)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for conn in list(self.connections()):
            conn.close("shutdown")
        tasks = [*self._tasks.values(), *self._boundary_tasks.values()]
        self._tasks.clear()
        self._boundary_tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def max_queue(self) -> int:
        return self.limits.max_queue

    @property
    def max_queue_bytes(self) -> int:
        return self.limits.max_queue_bytes

    # -- connections ------------------------------------------------------------------------
    def check_caps(self, key_id: str, address: str | None = None) -> None:
        if self._total >= self.max_total:
            self.rejected["process"] = self.rejected.get("process", 0) + 1
            raise CapExceeded(503, f"this server holds its maximum of {self.max_total} streams")
        if len(self._by_key.get(key_id, ())) >= self.max_per_key:
            self.rejected["key"] = self.rejected.get("key", 0) + 1
            raise CapExceeded(429, f"this key holds its maximum of {self.max_per_key} streams")
        if address is not None and self._by_address.get(address, 0) >= self.max_per_address:
            self.rejected["address"] = self.rejected.get("address", 0) + 1
            raise CapExceeded(429, f"this client address holds its maximum of "
                                   f"{self.max_per_address} streams")

    def open(self, env: str, kind: StreamKind, key_id: str,
             context: dict[str, Any] | None = None, address: str | None = None) -> Connection:
        """Register a connection at the store's current version (raises CapExceeded). From
        here on every later change is queued on it; :meth:`initial` says what came before.
        ``address`` is the client's (``None``: no per-address cap)."""
        self.check_caps(key_id, address)
        # str, not the orjson bytes (see Connection.results)
        ctx_key = orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode() if context else ""
        conn = Connection(env, kind, key_id, context, ctx_key, snapshot_for=self._snapshot_for,
                          limits=self.limits, stats=self.stats)
        fs = self.store.get(env)
        if fs is not None:
            conn.hold(fs.version, fs.state_id, fs.interval(time.time()))
        self._conns.setdefault(env, {}).setdefault(kind, set()).add(conn)
        self._by_key.setdefault(key_id, set()).add(conn)
        if address is not None:
            self._address_of[conn] = address
            self._by_address[address] = self._by_address.get(address, 0) + 1
        self._total += 1
        gauge = self.stats.sse_connections
        gauge[kind.value] = gauge.get(kind.value, 0) + 1
        return conn

    def release(self, conn: Connection) -> None:
        conn.close(conn.close_reason or "client gone")
        conns = self._conns.get(conn.env, {}).get(conn.kind)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self._total -= 1
            gauge = self.stats.sse_connections
            gauge[conn.kind.value] = gauge.get(conn.kind.value, 1) - 1
        keyed = self._by_key.get(conn.key_id)
        if keyed is not None:
            keyed.discard(conn)
            if not keyed:
                del self._by_key[conn.key_id]
        address = self._address_of.pop(conn, None)
        if address is not None:
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]

    async def heartbeat(self) -> None:
        """A heartbeat on every idle connection (one timer for the process, not one each), in
        slices like a change."""
        began = _clock()
        for conn in list(self.connections()):
            if _clock() - began >= SLICE_S:
                began = await yield_to_requests()
            conn.heartbeat()

    def close_key(self, key_id: str, reason: str = "key revoked") -> int:
        conns = list(self._by_key.get(key_id, ()))
        for conn in conns:
            conn.close(reason)
        return len(conns)

    def connections(self, env: str | None = None) -> Iterable[Connection]:
        for e, by_kind in list(self._conns.items()):
            if env is None or e == env:
                for conns in list(by_kind.values()):
                    yield from list(conns)

    @property
    def total(self) -> int:
        return self._total

    def sent(self, conn: Connection, written_at: float | None, events: int = 1) -> None:
        """Count an event handed to the socket (called by the stream after each send)."""
        count(self.stats, conn.kind.value, "sent", events)
        if written_at:
            self.propagation.observe(conn.kind.value, max(0.0, time.time() - written_at))

    def sent_directly(self, kind: StreamKind, events: int, written_at: float | None) -> None:
        """Count ``events`` that the fan-out wrote straight to idle streams' sockets just now
        (:meth:`Connection.push` returned True)."""
        if events:
            count(self.stats, kind.value, "sent", events)
            if written_at:
                self.propagation.observe(kind.value, max(0.0, time.time() - written_at), events)

    def sent_batch(self, conn: Connection, written: list[float | None]) -> None:
        """Count the events of one :meth:`Connection.take` payload."""
        kind = conn.kind.value
        count(self.stats, kind, "sent", len(written))
        now = time.time()
        for at in written:
            if at:
                self.propagation.observe(kind, max(0.0, now - at))

    # -- first events: snapshot or resume ---------------------------------------------------
    async def initial(self, conn: Connection, last_id: str | None) -> bytes:
        """What a new connection gets before its queue (see :func:`proxy.streams.resume.initial`).
        Runs right after :meth:`open` (a change published in between costs the connection a
        snapshot in place of a replay)."""
        return await resume.initial(conn, last_id, store=self.store, ring=self.changelog,
                                    history=self.history, snapshots=self.snapshots)

    # -- change intake (synchronous, from Store.publish) ------------------------------------
    def on_change(self, change: Change, flag_set: FlagSet) -> None:
        if change.reset and not flag_set.flags and change.deleted and self.store.get(change.env) is None:
            self.changelog.forget(change.env)  # environment deleted
        entry = self.changelog.record(change, flag_set)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside a loop (tools, tests): deliver in place
            self.distribute(change, flag_set, entry)
            return
        inbox = self._inbox.get(change.env)
        if inbox is None:
            inbox = self._inbox[change.env] = asyncio.Queue()
        inbox.put_nowait((change, flag_set, entry))
        task = self._tasks.get(change.env)
        if task is None or task.done():
            self._tasks[change.env] = loop.create_task(
                self._run_env(change.env, inbox), name=f"fanout:{change.env}")
        self._plan_boundaries(loop, change.env, flag_set)

    async def _run_env(self, env: str, inbox: asyncio.Queue[tuple[Change, FlagSet, Entry]]) -> None:
        loop = asyncio.get_running_loop()
        last_round = -math.inf
        while True:
            change, flag_set, entry = await inbox.get()
            partial: Callable[[int], bytes] | None = None
            batch: list[tuple[Change, FlagSet, Entry]] = []
            if self.coalesce_s > 0:
                # Leading edge: after a quiet spell this change goes out now. Trailing edge:
                # one round per window, merging everything that arrived meanwhile.
                wait = last_round + self.coalesce_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                last_round = loop.time()
                batch = [(change, flag_set, entry)]
                while not inbox.empty():
                    batch.append(inbox.get_nowait())
                if len(batch) > 1:
                    change, flag_set, entry, partial = self._merge(batch)
                    count(self.stats, "fanout", "merged", len(batch) - 1)
            elif inbox.qsize() >= self.max_backlog:
                # Far behind (changes arrive faster than the streams take them): jump to the
                # newest state once, as a reset, rather than hold every set in between.
                skipped = inbox.qsize()
                while not inbox.empty():
                    change, flag_set, entry = inbox.get_nowait()
                change = dataclasses.replace(change, reset=True)
                count(self.stats, "fanout", "skipped", skipped)
                log.debug("fan-out %d changes behind: sending version %d as a snapshot",
                            skipped + 1, change.version, extra={"env": env})
            try:
                await self._distribute_sliced(change, flag_set, entry, partial)
                evaluated = self._conns.get(env, {}).get(StreamKind.EVALUATED)
                if evaluated:
                    await self._distribute_evaluated(change, flag_set, list(evaluated))
            except Exception:  # a bad change must not stop this environment's streams
                log.exception("fan-out failed", extra={"env": env, "version": change.version})
            del flag_set, entry, partial, batch  # hold no FlagSet while idle

    def _merge(self, batch: list[tuple[Change, FlagSet, Entry]]
               ) -> tuple[Change, FlagSet, Entry, Callable[[int], bytes] | None]:
        """Several changes as one: the newest version and flag set, the union of what they
        touched. A rules connection that already holds a version inside the batch (opened
        meanwhile) gets its own merge of only the versions after it (``partial``)."""
        last, fs, _ = batch[-1]
        written = [c.written_at for c, _, _ in batch if c.written_at]
        first_written = min(written) if written else None  # propagation of the oldest
        if any(c.reset for c, _, _ in batch):
            return dataclasses.replace(last, reset=True, written_at=first_written), fs, \
                batch[-1][2], None
        merged = merge_changes([c for c, _, _ in batch], fs)
        merged = dataclasses.replace(merged, written_at=first_written)
        first_version = batch[0][0].version
        cache: dict[int, bytes] = {}

        def partial(held: int) -> bytes:
            payload = cache.get(held)
            if payload is None:
                later = [c for c, _, _ in batch if c.version > held]
                payload = cache[held] = rules_entry(
                    entry_from_change(merge_changes(later, fs), fs)) if later else b""
            return payload

        return merged, fs, entry_from_change(merged, fs), \
            (lambda held: b"" if held < first_version else partial(held))

    def distribute(self, change: Change, fs: FlagSet, entry: Entry | None = None,
                   partial: Callable[[int], bytes] | None = None) -> None:
        """Encode one change once per stream kind and queue it on every events and rules
        connection that has not seen it yet (evaluated streams: the env task, in slices)."""
        for _ in self._push(change, fs, entry, partial):
            pass

    async def _distribute_sliced(self, change: Change, fs: FlagSet, entry: Entry | None,
                                 partial: Callable[[int], bytes] | None) -> None:
        """:meth:`distribute`, letting requests run after every SLICE_S of work."""
        for _ in self._push(change, fs, entry, partial):
            await yield_to_requests()

    def _push(self, change: Change, fs: FlagSet, entry: Entry | None,
              partial: Callable[[int], bytes] | None) -> Iterator[None]:
        """Queue the change on events and rules connections; yields each time it has held
        the loop for SLICE_S (the caller lets requests run before it resumes)."""
        by_kind = self._conns.get(change.env)
        if not by_kind:
            return
        began = _clock()
        events = by_kind.get(StreamKind.EVENTS)
        if events:
            now = time.time()
            payload = notification(fs.stream_id(now), fs.updated_at or change.written_at or now)
            began = yield from self._push_to(StreamKind.EVENTS, list(events), change, fs,
                                             payload, None, began, fs.interval(now))
        rules = by_kind.get(StreamKind.RULES)
        if rules:
            if change.reset:
                payload = self.snapshots.rules_put(fs)
            else:
                payload = rules_entry(entry or entry_from_change(change, fs))
            yield from self._push_to(StreamKind.RULES, list(rules), change, fs, payload,
                                     partial, began)

    def _push_to(self, kind: StreamKind, conns: list[Connection], change: Change, fs: FlagSet,
                 payload: bytes, partial: Callable[[int], bytes] | None, began: float,
                 interval: int = 0) -> Generator[None, None, float]:
        """One kind's connections; returns when its current slice began. What went straight
        to a socket is counted once per slice, not per connection (a tenth of the fan-out's
        time at 10,000 streams went to counting them one by one)."""
        version, state_id, written_at = change.version, fs.state_id, change.written_at
        sent = 0
        for conn in conns:
            if not _due(conn, change, fs):
                continue
            # Opened during a merged round: only the versions after the one it holds.
            own = (partial(conn.version) or payload) if partial is not None else payload
            conn.hold(version, state_id, interval)
            if conn.push(own, written_at):
                sent += 1
            if _clock() - began >= SLICE_S:
                self.sent_directly(kind, sent, written_at)
                sent = 0
                yield
                began = _clock()
        self.sent_directly(kind, sent, written_at)
        return began

    async def _distribute_evaluated(self, change: Change, fs: FlagSet, conns: list[Connection]
                                    ) -> None:
        """Evaluate the touched flags once per distinct context; yield to requests after every
        SLICE_S of work so that 10,000 contexts never stall them (and the first clients are
        sent to while the rest are computed)."""
        everything = change.reset or change.evaluators_changed or change.metadata_changed
        keys: set[str] = set(fs.flags) if everything else set(change.upserted)
        keys |= set(change.deleted)
        if everything:
            keys |= {k for c in conns for k in c.results}
        if fs.boundaries:  # a client may still hold an earlier interval's results of these
            keys |= timed_flags(fs)
        now = time.time()
        stream_id, interval = fs.stream_id(now), fs.interval(now)
        evaluate, _ = self.engine
        flags, encoded = fs.flags, self.snapshots.encoded
        per_context: dict[str, dict[str, bytes]] = {}  # computed once per distinct context
        results: dict[str, dict[str, EvaluationResult]] = {}  # per context: for exposures

        def encode(k: str, context: dict[str, Any], mine: dict[str, EvaluationResult]) -> bytes:
            # Static flags and each targeting outcome return a precomputed result object
            # shared by every context: encoded once, for every round and stream (Snapshots).
            result = mine[k] = evaluate(fs, k, context)
            return encoded(result, flags[k])

        written_at, sent = change.written_at, 0
        began = _clock()
        for conn in conns:
            if _clock() - began >= SLICE_S:
                self.sent_directly(StreamKind.EVALUATED, sent, written_at)
                sent = 0
                began = await yield_to_requests()
            if conn.version == 0 and not conn.closed:  # opened before any rules: a put first
                conn.owe_snapshot()
                continue
            if not _due(conn, change, fs) or conn.needs_snapshot or conn.closed:
                continue
            new = per_context.get(conn.ctx_key)
            if new is None:
                mine = results[conn.ctx_key] = {}
                new = {k: encode(k, conn.context, mine) for k in keys if k in flags}
                per_context[conn.ctx_key] = new
            conn.hold(change.version, fs.state_id, interval)
            patched = [k for k, item in new.items() if conn.results.get(k) != hash(item)]
            payload = diff_frames(conn.results, new, keys, stream_id)
            if not payload:
                continue
            if conn.push(payload, written_at):
                sent += 1
            if patched and not conn.needs_snapshot and not conn.closed:
                # Sent or queued: what this client is shown anew (insights). A patch dropped
                # for an owed snapshot is counted by that snapshot's put instead.
                mine = results[conn.ctx_key]
                self.stats.count_exposures(conn.env, exposures_of(mine[k] for k in patched))
        self.sent_directly(StreamKind.EVALUATED, sent, written_at)

    # -- time boundaries --------------------------------------------------------------------
    def _plan_boundaries(self, loop: asyncio.AbstractEventLoop, env: str, fs: FlagSet) -> None:
        """The environment's one boundary timer, for its newest flag set: a write replaces it
        (the change itself tells every stream the state and interval it brings), and a set
        with no boundary ahead has none."""
        task = self._boundary_tasks.pop(env, None)
        if task is not None:
            task.cancel()
        if fs.next_boundary(time.time()) is not None:
            self._boundary_tasks[env] = loop.create_task(
                self._run_boundaries(env, fs), name=f"boundaries:{env}")

    async def _run_boundaries(self, env: str, fs: FlagSet) -> None:
        """Wait for each boundary of ``fs`` ahead, then tell the environment's streams."""
        while (at := fs.next_boundary(time.time())) is not None:
            await asyncio.sleep(min(max(0.0, at - time.time()), BOUNDARY_RECHECK_S))
            if time.time() < at:
                continue  # a recheck of the wall clock (or it was set back)
            try:
                await self._boundary_round(env, fs)
            except Exception:  # a failed round must not stop the next boundaries
                log.exception("boundary round failed", extra={"env": env})

    async def _boundary_round(self, env: str, fs: FlagSet) -> None:
        """Tell each events and evaluated stream still at ``fs`` that a boundary passed:
        a ``refetchEvaluation`` / the patches of its context (or only the new id when nothing
        changed for it), each at a random point within ``boundary_jitter`` seconds."""
        by_kind = self._conns.get(env, {})
        conns = [*by_kind.get(StreamKind.EVENTS, ()), *by_kind.get(StreamKind.EVALUATED, ())]
        if not conns:
            return
        slots: dict[int, list[Connection]] = {}
        for conn in conns:
            slot = int(random.random() * self.boundary_jitter / BOUNDARY_SLOT_S)
            slots.setdefault(slot, []).append(conn)
        loop = asyncio.get_running_loop()
        start = loop.time()
        told = BoundaryRound(fs, self.engine[0], self.render, self.stats)
        for slot in sorted(slots):
            wait = start + slot * BOUNDARY_SLOT_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            told.at(time.time())
            began = _clock()
            for conn in slots[slot]:
                if _clock() - began >= SLICE_S:
                    began = await yield_to_requests()
                    told.at(time.time())
                told.tell(conn)
        for kind, sent in told.sent.items():
            self.sent_directly(kind, sent, None)
