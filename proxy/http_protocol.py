"""One ``send(2)`` per HTTP response: uvicorn's httptools protocol with gathered writes.

uvicorn writes a response's status line + headers and then its body with two
``transport.write`` calls, so every response costs two syscalls and two TCP segments
(TCP_NODELAY is on). Profiled under ``bench/ofrep_http.py`` those two writes were about a fifth
of the worker's CPU. Here a connection's writes are gathered and go out in one write when the
response completes, or at the end of the event-loop tick for streamed bodies (SSE), so a
stream's headers and events are never held back. Order is unchanged, and flow control still
sees every byte: the gathered bytes are at most one tick's worth.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatheringTransport:
    """Wraps a transport: ``write`` gathers bytes until ``flush`` (called at the end of the
    response, on ``close`` and, failing both, at the end of the current loop tick)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self._transport
        if not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        gathered = sum(map(len, self._pending)) if self._pending else 0
        return self._transport.get_write_buffer_size() + gathered

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=GatheringHttpToolsProtocol)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
