"""One ``send(2)`` per HTTP response, the responses of a batch back to back: uvicorn's
httptools protocol with its writes gathered.

uvicorn writes a response's status line + headers and then its body with two
``transport.write`` calls, so every response costs two syscalls and two TCP segments
(TCP_NODELAY is on). Profiled under ``bench/ofrep_http.py`` those two writes were about a fifth
of the worker's CPU. Here a response's writes are held from its head on and leave together
with the other responses of its batch (:class:`Batch`: the requests whose tasks one turn of
the loop started); earlier when the connection closes, an interim ``100 Continue`` must go
out, or 64 KB are held. A streamed body's later writes (SSE events) go straight through.
Order and flow control are unchanged.

Why the batch and not each response as it completes: each ``send`` to a client that sleeps
waiting for it pays for waking it up; on loopback that is this process's CPU (profiled under
wrk, new users: ~15 % of the worker in ``sock_def_readable``'s wake-up). Sent back to back,
the first wakes the client and the rest find it awake: bulk OFREP with new users went from
~20 to ~8 us of system CPU a request and from 9.2k to 11.6k req/s (same-run A/B, three
alternations; p99 6.8 -> 4.9 ms). A response waits at most for the handlers after it in its
batch (tens of microseconds each under load); at low load a batch is one request and nothing
waits. The batch leaves when its last request is answered, not on the loop's next turn: that
turn runs its due timers first, and in rule-change storms the fan-out's 100 us slices made
every response wait for one (bench/soak.py, p99 storm/quiet: 1.23x on the next turn, 1.07x at
the batch's end, one run each).

It also puts the request's cycle in ``scope["extensions"]["flagedge.cycle"]``
(:data:`proxy.api.transport.CYCLE_EXTENSION`), read only through that module's readers, on the
side that consumes it: ``connection_transport`` (an endpoint tunes its own connection:
``proxy.api.streams`` caps SSE send buffers) and ``body_writer`` (a started streamed body
written without a trip through the middleware stack: the fan-out writes SSE events to idle
streams directly).

And it enforces this process's connection limits (:mod:`proxy.server.connections`), which
uvicorn lacks: a request's head must arrive within ``header_timeout`` of the connection (or of
the request's first byte, on a kept-alive connection) and its body within ``body_timeout`` of
the head, else a 408 (when a response can still be sent) and the connection closes; a
connection beyond ``max_connections`` gets a 503 to its first request and closes. Deadlines
cost a timestamp per phase; one timer per event loop closes the overdue (no timer per
request). A streamed response is not "reading": an SSE stream lives on once its request is in.
When the peer is a trusted proxy, ``scope["client"]`` becomes the client that proxy names
(:mod:`proxy.api.client_address`).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.api.client_address import forwarded_client, forwarded_for
from proxy.api.transport import CYCLE_EXTENSION, TransportWrapper
from proxy.server import access_log
from proxy.server.connections import PROCESS, error_response

# What a connection is waiting for, for its deadline: nothing (a request being answered, a
# stream), a request's head or body, or (KEPT) the next request on a kept-alive connection.
IDLE, HEADERS, BODY, KEPT = 0, 1, 2, 3
SWEEP_MIN_S, SWEEP_MAX_S = 0.05, 1.0  # a deadline is enforced this late at most (a 4th of it)
CLOSE_SLICE = 32  # overdue connections closed per turn of the event loop
# A due timer, not call_soon: it runs after the loop polled the sockets, so the requests
# that arrived meanwhile go first (as proxy.streams.fanout yields).
YIELD_S = 1e-9
OVER_LIMIT_RETRY_S = 1
# A response held longer than this is written at once (no copying of large bodies over and
# over while they are gathered).
MAX_HELD = 64 * 1024
_TIMED_OUT = error_response(408, b"Request Timeout", "REQUEST_TIMEOUT",
                            "the request was not received in time")
_OVER_LIMIT_BODY = orjson.dumps({"errorCode": "GENERAL",
                                 "errorDetails": "this server holds its maximum of connections"})


class Batch:
    """One event loop's responses held to leave together, and its request tasks that are
    scheduled but have not started: the rest of the batch that arrived with them.

    The held responses are sent (:meth:`flush`) when the last request of the batch completes
    its response (``waiting`` is 0), or else at the latest by a ``call_soon`` scheduled by the
    first one held (a request that awaits something, a streamed response). That one runs on
    the loop's next turn, after its due timers; with it alone, responses waited for the
    fan-out's next 100 us slice in rule-change storms."""

    __slots__ = ("_held", "_scheduled", "loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiting = 0
        self._held: list[GatheringTransport] = []
        self._scheduled = False

    def hold(self, transport: GatheringTransport) -> None:
        self._held.append(transport)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        held, self._held = self._held, []
        for transport in held:
            transport.flush()  # (nothing, when it was flushed on its own: a close)


class GatheringTransport(TransportWrapper):
    """Wraps a transport: after :meth:`hold_next`, the next write (a response's head) and
    those after it are held and joined, and :meth:`flush` sends them in one write when its
    :class:`Batch` leaves (or earlier: close, an interim 100, ``MAX_HELD``)."""

    __slots__ = ("_batch", "_held", "_hold", "_scope", "_transport")

    def __init__(self, transport: asyncio.Transport, batch: Batch):
        self._transport = transport
        self._batch = batch
        self._held: bytes | None = None
        self._hold = False
        self._scope: dict[str, Any] | None = None  # the request whose head is awaited

    def loop_transport(self) -> asyncio.Transport:
        return self._transport

    def hold_next(self, scope: dict[str, Any]) -> None:
        """The next write is the response head of ``scope``'s request."""
        self._hold = True
        self._scope = scope

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._hold:
            if data[9:10] == b"1" and data.startswith(b"HTTP/"):
                # An interim 100 Continue: the client waits for it to send its body, and it
                # is not the response's head, which follows.
                self.flush()
                self._transport.write(data)
                return
            self._hold = False
            sink = access_log.SINK
            if sink is not None and self._scope is not None:
                sink.response(self._scope, data[9:12])  # b"HTTP/1.1 200 OK\r\n..."
            self._scope = None
        elif self._held is None:  # a streamed body's later chunks: straight out
            self._transport.write(data)
            return
        held = self._held
        if held is None:  # a head: held with the batch's others
            self._held = bytes(data)
            self._batch.hold(self)
        elif len(held) + len(data) > MAX_HELD:
            self._held = None
            self._transport.write(held + data)
        else:
            self._held = held + data

    def flush(self) -> None:
        held = self._held
        if held is None:
            return
        self._held = None
        if not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        held = len(self._held) if self._held is not None else 0
        return self._transport.get_write_buffer_size() + held

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class ReadDeadlines:
    """The connections of one event loop that are reading a request, and the one timer that
    closes those past their deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float):
        self.loop = loop
        self.reading: set[GatheringHttpToolsProtocol] = set()
        self._period = min(SWEEP_MAX_S, max(SWEEP_MIN_S, period))
        loop.call_later(self._period, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        self._close([p for p in self.reading if p.read_deadline <= now], 0)

    def _close(self, overdue: list[GatheringHttpToolsProtocol], start: int) -> None:
        """Close the overdue a slice at a time, letting requests run in between: thousands
        of slow-loris connections expire together, and closing them all in one callback
        stalled every other request of the worker (bench/slowloris.py, 5,000 of them: the
        normal clients' p99 6.2x the quiet one in one callback, 1.6x in slices)."""
        now = self.loop.time()
        end = start + CLOSE_SLICE
        for proto in overdue[start:end]:
            if proto.reading != IDLE and proto.read_deadline <= now:  # not done meanwhile
                self.reading.discard(proto)
                proto.read_timed_out()
        if end < len(overdue):
            self.loop.call_later(YIELD_S, self._close, overdue, end)
        else:
            self.loop.call_later(self._period, self._sweep)


_deadlines: ReadDeadlines | None = None


def read_deadlines(loop: asyncio.AbstractEventLoop) -> ReadDeadlines:
    """This loop's deadlines (one serving loop per process; a new loop, as in tests, gets
    its own)."""
    global _deadlines
    if _deadlines is None or _deadlines.loop is not loop:
        limits = PROCESS.limits
        _deadlines = ReadDeadlines(loop, min(limits.header_timeout, limits.body_timeout) / 4)
    return _deadlines


_batch: Batch | None = None


def batch_of(loop: asyncio.AbstractEventLoop) -> Batch:
    """This loop's batch (one serving loop per process; a new loop, as in tests, gets its
    own)."""
    global _batch
    if _batch is None or _batch.loop is not loop:
        _batch = Batch(loop)
    return _batch


async def _over_limit(_scope: Scope, _receive: Receive, send: Send) -> None:
    """The answer to every request of a connection beyond ``max_connections`` (uvicorn closes
    the connection after it: the cycle is not kept alive)."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", b"%d" % OVER_LIMIT_RETRY_S),
        (b"content-length", b"%d" % len(_OVER_LIMIT_BODY))]})
    await send({"type": "http.response.body", "body": _OVER_LIMIT_BODY})


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=GatheringHttpToolsProtocol)``."""

    reading = IDLE
    read_deadline = math.inf
    _refuse = False  # came in beyond max_connections
    _via_proxy = False  # the peer is a trusted proxy
    _deadlines: ReadDeadlines | None = None
    _batch: Batch

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._batch = batch_of(self.loop)
        super().connection_made(GatheringTransport(transport, self._batch))  # type: ignore[arg-type]
        PROCESS.open += 1
        limits = PROCESS.limits
        self._refuse = len(self.connections) > limits.max_connections
        if limits.trusted and self.client is not None:
            self._via_proxy = self.client[0] in limits.trusted
        self._deadlines = read_deadlines(self.loop)
        self._read(HEADERS, limits.header_timeout)  # its first request's head, from now

    def connection_lost(self, exc: Exception | None) -> None:
        PROCESS.open -= 1
        self._read(IDLE, math.inf)
        super().connection_lost(exc)

    def _read(self, phase: int, timeout: float) -> None:
        self.reading = phase
        self.read_deadline = self.loop.time() + timeout
        if self._deadlines is not None:
            if phase == IDLE:
                self._deadlines.reading.discard(self)
            else:
                self._deadlines.reading.add(self)

    def read_timed_out(self) -> None:
        """Past the deadline of what it is reading: a 408 if a response can still be sent
        (none started on this connection's current request), then the connection closes."""
        phase, self.reading = self.reading, IDLE
        if self.transport.is_closing():
            return
        if phase == KEPT:  # idle past the keep-alive timeout: closed quietly, as uvicorn does
            self.transport.close()
            return
        PROCESS.count("header_timeout" if phase == HEADERS else "body_timeout")
        cycle = self.cycle
        if phase == HEADERS:
            answer = cycle is None or cycle.response_complete
        else:
            answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The app's receive() returns a disconnect now; anything it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            self.transport.write(_TIMED_OUT)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.reading != HEADERS:  # a later request on a kept-alive connection
            self._read(HEADERS, PROCESS.limits.header_timeout)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered before its body was in
            self._read(KEPT, self.timeout_keep_alive)
        else:
            self._read(IDLE, math.inf)
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._refuse:
            PROCESS.count("connection_limit")
            cycle.keep_alive = False
            app = _over_limit
        # Here, not when the head arrives: a pipelined request's head arrives while the
        # previous response is under way, and its task starts only once that one is done.
        self.transport.hold_next(cycle.scope)  # type: ignore[attr-defined]  # its response head
        batch = self._batch
        batch.waiting += 1

        async def started(scope: Scope, receive: Receive, send: Send) -> None:
            batch.waiting -= 1
            await app(scope, receive, send)

        super()._start_asgi_task(cycle, started)

    def on_response_complete(self) -> None:
        """uvicorn's, except that the keep-alive timeout is a deadline swept with the others
        (:class:`ReadDeadlines`) instead of a timer armed after every response and cancelled
        by the next request: ~2 us a request."""
        if self._batch.waiting == 0:  # the last of its batch: they all leave now
            self._batch.flush()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.reading == IDLE:  # (else the request's body, or the next head, is coming)
            self._read(KEPT, self.timeout_keep_alive)

    def on_headers_complete(self) -> None:
        self._read(BODY, PROCESS.limits.body_timeout)
        if self._via_proxy:  # before the app's task starts (a later loop tick)
            self.scope["client"] = (forwarded_client(
                self.client[0], forwarded_for(self.headers), PROCESS.limits.trusted), 0)
        super().on_headers_complete()
        # The scope is the cycle's own dict and its task has not run yet (it starts on a later
        # loop tick): the endpoint finds its cycle there (proxy.api.transport's readers).
        # A weak reference: the cycle holds the scope, so a strong one would make every
        # request a reference cycle left to the garbage collector (HTTP bench, one A/B: 0.80x
        # of the echo instead of 0.92x).
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self.scope.setdefault("extensions", {})[CYCLE_EXTENSION] = weakref.ref(cycle)
