"""One ``send(2)`` per HTTP response: uvicorn's httptools protocol, the head held for the body.

uvicorn writes a response's status line + headers and then its body with two
``transport.write`` calls, so every response costs two syscalls and two TCP segments
(TCP_NODELAY is on). Profiled under ``bench/ofrep_http.py`` those two writes were about a fifth
of the worker's CPU. Here the first write after each request (the head) is held and leaves
with the next write (the body), or when the response completes, the connection closes or the
event-loop tick ends, so a stream's headers are never held back; later writes of a streamed
body (SSE events) go straight through. Order and flow control are unchanged.

It also puts the request's cycle in ``scope["extensions"]["flagedge.cycle"]``
(:data:`proxy.api.transport.CYCLE_EXTENSION`), read only through that module's readers, on the
side that consumes it: ``connection_transport`` (an endpoint tunes its own connection:
``proxy.api.streams`` caps SSE send buffers) and ``body_writer`` (a started streamed body
written without a trip through the middleware stack: the fan-out writes SSE events to idle
streams directly).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.api.transport import CYCLE_EXTENSION, TransportWrapper


class GatheringTransport(TransportWrapper):
    """Wraps a transport: after :meth:`hold_next`, the next write waits to be joined by the
    one after it (or is sent by :meth:`flush`: response end, close, end of the loop tick)."""

    __slots__ = ("_held", "_hold", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._hold = False

    def loop_transport(self) -> asyncio.Transport:
        return self._transport

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
        # loop tick): the endpoint finds its cycle there (proxy.api.transport's readers).
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

