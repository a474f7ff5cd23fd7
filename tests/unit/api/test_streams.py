"""SSE streams limit their connection's send buffers (proxy.api.streams.limit_send_buffers):
the event loop's write buffer pauses at the first write the kernel cannot take, and the
kernel's send buffer is capped at settings.sse_send_buffer. Real sockets, both event loops."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from proxy.api.streams import limit_send_buffers

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run, "uvloop": uvloop.run}


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


def sndbuf(sock: Any) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


async def open_pair() -> tuple[asyncio.WriteTransport, Recorder, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(Recorder, a)
    return transport, protocol, b  # type: ignore[return-value]


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return n
        n += len(chunk)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stalled_stream_pauses_at_the_first_write_the_kernel_cannot_take(loop: str):
    async def main() -> None:
        transport, protocol, reader = await open_pair()
        limit_send_buffers(transport, 65_536)
        writes = 0
        while not protocol.paused:  # a reader that never reads
            transport.write(b"x" * 1000)
            writes += 1
            # Until then every write went straight into the kernel: nothing waits in the loop.
            assert protocol.paused or transport.get_write_buffer_size() == 0
            assert writes < 10_000, "never paused"
        # Paused holding at most the one write the kernel refused (default: 64 KiB of them).
        assert 0 < transport.get_write_buffer_size() <= 1000
        assert drain(reader) > 0
        deadline = asyncio.get_running_loop().time() + 5
        while not protocol.resumed:  # the reader caught up: sends may go on
            assert asyncio.get_running_loop().time() < deadline, "never resumed"
            drain(reader)
            await asyncio.sleep(0.001)
        assert transport.get_write_buffer_size() == 0
        transport.close()
        reader.close()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", LOOPS)
def test_the_kernel_send_buffer_is_capped_or_left_to_the_os(loop: str):
    async def main() -> None:
        transport, _, reader = await open_pair()
        sock = transport.get_extra_info("socket")
        default = sndbuf(sock)
        limit_send_buffers(transport, 0)  # 0: the OS's own (autotuned) size
        assert sndbuf(sock) == default
        limit_send_buffers(transport, 32_768)
        assert sndbuf(sock) == 2 * 32_768  # Linux doubles it for bookkeeping
        transport.close()
        await asyncio.sleep(0)
        limit_send_buffers(transport, 65_536)  # closed meanwhile: not an error
        reader.close()

    LOOPS[loop](main())
