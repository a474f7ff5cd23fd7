"""One open SSE stream on the fan-out side: a bounded queue of encoded events, and what the
client holds (version, per-flag result hashes). Pushing never blocks: over the bound the
queue is dropped and a snapshot owed, so a stalled reader costs bounded memory and nobody
else waits (``proxy.streams.fanout`` pushes, ``proxy.api.streams`` drains).

A connection knows nothing of the fan-out that feeds it: it is created with what it uses, as
small declared types (ld-relay's ``internal/streams`` shape): its :class:`Limits`, the
:class:`~proxy.streams.frames.Counters` it counts in and a :data:`SnapshotFor` callback that
builds the snapshot it is owed. The fan-out shares one of each among all its connections.
An event :meth:`Connection.push` wrote straight to the socket is counted by its caller (the
fan-out, once per slice of connections), one that waits in the queue by the stream that
sends it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proxy.streams.frames import PING, Counters, count


class StreamKind(StrEnum):
    EVENTS = "events"  # OFREP change notifications
    EVALUATED = "evaluated"  # per-context results
    RULES = "rules"  # raw flagd document


Item = tuple[bytes, float | None]  # encoded event(s), source write time (for the metric)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one connection may hold queued before it is owed a snapshot instead."""

    max_queue: int = 64  # events
    max_queue_bytes: int = 1 << 20


# The newest state for this connection in one event (b"" when there is none); it also sets
# what the connection now holds (version, results). ``Snapshots.snapshot`` in the fan-out.
SnapshotFor = Callable[["Connection"], bytes]


class Connection:
    """One open stream: a bounded queue of encoded events and what the client holds."""

    __slots__ = ("_parked", "_queue", "_queued_bytes", "_waiter", "close_reason", "closed",
                 "context", "ctx_key", "direct", "env", "interval", "key_id", "kind", "limits",
                 "needs_snapshot", "results", "snapshot_for", "state_id",
                 "stats", "version")

    def __init__(self, env: str, kind: StreamKind, key_id: str,
                 context: dict[str, Any] | None = None, ctx_key: str = "", *,
                 snapshot_for: SnapshotFor, limits: Limits, stats: Counters):
        self.snapshot_for = snapshot_for
        self.limits = limits
        self.stats = stats
        self.env = env
        self.kind = kind
        self.key_id = key_id
        self.context = context or {}
        self.ctx_key = ctx_key  # canonical context: connections sharing it share the work
        self.version = 0  # newest version queued or sent to this client
        self.state_id = ""  # ... and its state id (a reset of the same number is news)
        # ... and the interval between time boundaries of that state it was told (events and
        # evaluated streams of rules with literal $flagd.timestamp thresholds; else 0)
        self.interval = 0
        # Evaluated stream: flag key -> hash of the OFREP item JSON the client holds. A hash,
        # not the bytes: orjson output keeps a ~4 KB buffer each, 20 flags x 10,000 clients.
        self.results: dict[str, int] = {}
        # Made on demand and dropped when drained: an empty deque is ~600 bytes, and most
        # of 10,000 streams are idle most of the time.
        self._queue: deque[Item] | None = None
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        # Set by the stream once its response is under way: writes one event straight to the
        # socket, False when it cannot now (proxy.api.transport.body_writer). Used only while
        # the stream is parked in wait() with nothing queued, so events keep their order.
        self.direct: Callable[[bytes], bool] | None = None
        self._parked = False
        self.needs_snapshot = False
        self.closed = False
        self.close_reason = ""

    def hold(self, version: int, state_id: str, interval: int = 0) -> None:
        """The client now has (or has queued) this state (at this time interval)."""
        self.version, self.state_id, self.interval = version, state_id, interval

    def push(self, payload: bytes, written_at: float | None) -> bool:
        """Never blocks. Over the bound, drop everything queued and owe a snapshot. True when
        the event went straight to the socket (the caller counts it as sent); else it is
        queued (the stream counts it when it sends), or owed as part of a snapshot."""
        if self.closed or self.needs_snapshot:
            return False  # a snapshot is owed: it will carry this change too
        queue = self._queue
        # An idle stream's event goes out here and now: no wake-up, no task step, no send
        # through the middleware (10,000 streams x every change).
        if queue is None and self._parked and self.direct is not None and self.direct(payload):
            return True
        if queue is None:
            queue = self._queue = deque()
        limits = self.limits
        if (len(queue) >= limits.max_queue
                or self._queued_bytes + len(payload) > limits.max_queue_bytes):
            self._queue = None
            self._queued_bytes = 0
            self.needs_snapshot = True
            count(self.stats, self.kind.value, "coalesced")
        else:
            queue.append((payload, written_at))
            self._queued_bytes += len(payload)
        self._wake()
        return False

    def owe_snapshot(self) -> None:
        self._queue = None
        self._queued_bytes = 0
        self.needs_snapshot = True
        self._wake()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._queue = None
            self._queued_bytes = 0
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def heartbeat(self) -> None:
        """A heartbeat if idle: written straight to the socket while the stream is parked (as
        :meth:`push` does: 10,000 wake-ups at once held the loop for tens of ms every PING_S),
        else queued (an empty item: the stream sends :data:`PING`)."""
        if self.closed or self.needs_snapshot or self._queue:
            return
        if self._parked and self.direct is not None and self.direct(PING):
            return
        self._queue = deque(((b"", None),))
        self._wake()

    def take(self, limit: int = 1 << 16) -> tuple[bytes, list[float | None]] | None:
        """What is ready to send, without waiting: an owed snapshot, or everything queued (up
        to about ``limit`` bytes) as one payload with each event's write time, so a reader
        that fell behind costs one send, not one per event. An empty payload is a heartbeat.
        None when nothing is ready (or the connection is closed: see ``closed``)."""
        self._parked = False
        payload = self._owed_snapshot()
        if payload:
            return payload, [None]
        queue = self._queue
        if self.closed or not queue:
            return None
        payload, at = queue.popleft()
        self._queued_bytes -= len(payload)
        if not payload:  # a heartbeat
            if not queue:
                self._queue = None
            return b"", []
        parts, times, size = [payload], [at], len(payload)
        while queue and size < limit:
            payload, at = queue.popleft()
            self._queued_bytes -= len(payload)
            if payload:  # a heartbeat behind events is redundant
                parts.append(payload)
                times.append(at)
                size += len(payload)
        if not queue:
            self._queue = None
        return (parts[0] if len(parts) == 1 else b"".join(parts)), times

    def _owed_snapshot(self) -> bytes:
        """The snapshot this connection is owed (and no longer owes), else b""."""
        while self.needs_snapshot and not self.closed:
            self.needs_snapshot = False
            payload = self.snapshot_for(self)
            if payload:
                return payload
        return b""

    def wait(self) -> asyncio.Future[None]:
        """A future that completes when something is queued (a push the direct writer did not
        take), a snapshot is owed or the connection closes. Awaited directly by the stream (no
        coroutine per wait: with 10,000 streams those young objects made each garbage-collector
        pass cost milliseconds); while it waits, pushes may go out through :attr:`direct`."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._parked = True  # until take(): pushes may write directly meanwhile
        return waiter

    async def next(self) -> Item | None:
        """The next single item (an empty payload is a heartbeat), or None once the connection
        is closed. Item by item, for tests and tools; streams send :meth:`take` batches and
        await :meth:`wait` themselves."""
        self._parked = False
        while not self.closed:
            payload = self._owed_snapshot()
            if payload:
                return payload, None
            queue = self._queue
            if queue:
                item = queue.popleft()
                self._queued_bytes -= len(item[0])
                if not queue:
                    self._queue = None
                return item
            await self.wait()
            self._parked = False
        return None


class CapExceeded(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
