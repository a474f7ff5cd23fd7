"""One ``send(2)`` per HTTP response: uvicorn's httptools protocol, the head held for the body.

uvicorn writes a response's status line + headers and then its body with two
``transport.write`` calls, so every response costs two syscalls and two TCP segments
(TCP_NODELAY is on). Profiled under ``bench/ofrep_http.py`` those two writes were about a fifth
of the worker's CPU. Here the first write after each request (the head) is held and leaves
with the next write (the body), or when the response completes, the connection closes or the
event-loop tick ends, so a stream's headers are never held back; later writes of a streamed
body (SSE events) go straight through. Order and flow control are unchanged.

It also puts the request's cycle in ``scope["extensions"]["flagedge.cycle"]``, read only through
:func:`connection_transport` (an endpoint tunes its own connection: ``proxy.api.streams`` caps
SSE send buffers) and :func:`body_writer` (a started streamed body written without a trip
through the middleware stack: the fan-out writes SSE events to idle streams directly).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# scope["extensions"] key: a weak reference to uvicorn's RequestResponseCycle (read it with
# the functions below)
CYCLE_EXTENSION = "flagedge.cycle"
BodyWriter = Callable[[bytes], bool]


class GatheringTransport:
    """Wraps a transport: after :meth:`hold_next`, the next write waits to be joined by the
    one after it (or is sent by :meth:`flush`: response end, close, end of the loop tick)."""

    __slots__ = ("_held", "_hold", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._hold = False

    def hold_next(self) -> None:
        self._hold = True

    def write(self, data: bytes) -> None:
        if not data:
            return
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._hold:
            self._hold = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

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


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=GatheringHttpToolsProtocol)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The scope is the cycle's own dict and its task has not run yet (it starts on a later
        # loop tick): the endpoint finds its cycle there (see connection_transport/body_writer).
        # A weak reference: the cycle holds the scope, so a strong one would make every
        # request a reference cycle left to the garbage collector (HTTP bench, one A/B: 0.80x
        # of the echo instead of 0.92x).
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self.scope.setdefault("extensions", {})[CYCLE_EXTENSION] = weakref.ref(cycle)
        self.transport.hold_next()  # type: ignore[attr-defined]  # the response head

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()


def _cycle(scope: dict[str, Any]) -> RequestResponseCycle | None:
    ref: weakref.ref[RequestResponseCycle] | None = scope.get("extensions", {}).get(
        CYCLE_EXTENSION)
    return ref() if ref is not None else None


def connection_transport(scope: dict[str, Any]) -> asyncio.Transport | None:
    """The event loop's transport of the connection serving ``scope`` (None when not served by
    :class:`GatheringHttpToolsProtocol`)."""
    cycle = _cycle(scope)
    if cycle is None:
        return None
    transport = cycle.transport
    if isinstance(transport, GatheringTransport):
        return transport._transport  # the loop's own, under the gathering wrapper
    return transport


def body_writer(scope: dict[str, Any]) -> BodyWriter | None:
    """A function that writes one more chunk of this request's streamed (chunked) response body
    straight to the transport, as ``send({"type": "http.response.body", "more_body": True})``
    would, without the coroutines of every middleware in between. It returns False, writing
    nothing, whenever ``send`` would have to wait or would not write: the head not sent yet,
    the body complete, not chunked, the client gone, or the transport paused by flow control.
    The caller then falls back to ``send``. For bodies the middleware has nothing to do with
    (SSE events after the stream's first ``send``). None when not served by this protocol."""
    cycle = _cycle(scope)
    if cycle is None:
        return None
    flow, transport = cycle.flow, cycle.transport

    def write(body: bytes) -> bool:
        if (cycle.disconnected or flow.write_paused or not cycle.response_started
                or cycle.response_complete or not cycle.chunked_encoding or not body
                or transport.is_closing()):
            return False
        try:
            transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        except RuntimeError:  # the transport closed under us: send() will find out
            return False
        return True

    return write
