"""SSE streams cap their socket's kernel send buffer (settings.sse_send_buffer)."""

from __future__ import annotations

import socket

from proxy.api.streams import cap_send_buffer
from proxy.http_protocol import SOCKET_EXTENSION


def sndbuf(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def test_the_stream_socket_send_buffer_is_capped():
    a, b = socket.socketpair()
    with a, b:
        cap_send_buffer({"extensions": {SOCKET_EXTENSION: a}}, 65_536)
        assert sndbuf(a) == 2 * 65_536  # Linux doubles it for bookkeeping
        cap_send_buffer({"extensions": {SOCKET_EXTENSION: a}}, 32_768)
        assert sndbuf(a) == 2 * 32_768


def test_without_the_extension_nothing_happens():
    cap_send_buffer({"type": "http"}, 65_536)  # another ASGI server: no socket, no error
    cap_send_buffer({"extensions": {}}, 65_536)


def test_a_closed_socket_is_not_an_error():
    a, b = socket.socketpair()
    a.close()
    b.close()
    cap_send_buffer({"extensions": {SOCKET_EXTENSION: a}}, 65_536)
