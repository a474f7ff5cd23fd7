"""One ``send(2)`` per HTTP response: uvicorn's httptools protocol, the head held for the body.

uvicorn writes a response's status line + headers and then its body with two
``transport.write`` calls, so every response costs two syscalls and two TCP segments
(TCP_NODELAY is on). Profiled under ``bench/ofrep_http.py`` those two writes were about a fifth
of the worker's CPU. Here the first write after each request (the head) is held and leaves
with the next write (the body), or when the response completes, the connection closes or the
event-loop tick ends, so a stream's headers are never held back; later writes of a streamed
body (SSE events) go straight through. Order and flow control are unchanged.

It also puts the connection's socket in ``scope["extensions"]["flagedge.socket"]``, so that
an endpoint can tune its own connection (``proxy.api.streams`` caps SSE send buffers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SOCKET_EXTENSION = "flagedge.socket"  # scope["extensions"] key: the connection's socket


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
        self._socket = transport.get_extra_info("socket")  # once per connection, not request
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        # For endpoints that tune their connection (SSE streams cap the kernel send buffer).
        self.scope.setdefault("extensions", {})[SOCKET_EXTENSION] = self._socket
        super().on_headers_complete()
        self.transport.hold_next()  # type: ignore[attr-defined]  # the response head

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
