"""proxy.server.connections and the read deadlines of proxy.server.http_protocol, on uvicorn's
real protocol code over a recording transport (real sockets: tests/integration/test_connections.py)."""

from __future__ import annotations

import logging
import resource
from typing import Any

import pytest

from proxy.config import Settings
from proxy.server import connections, http_protocol
from proxy.server.connections import PROCESS, ConnectionLimits, raise_open_files
from tests.unit.server.test_http_protocol import connect, plain
from tests.waiting import until


@pytest.fixture
def limits():
    saved, saved_counts = PROCESS.limits, dict(PROCESS.refused)
    PROCESS.refused.clear()
    yield
    PROCESS.limits = saved
    PROCESS.refused.clear()
    PROCESS.refused.update(saved_counts)


async def answer_without_reading(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_a_slow_head_gets_a_408_and_the_connection_closes(limits):
    proto, transport = connect(plain)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    assert proto.reading == http_protocol.HEADERS
    proto.read_timed_out()
    assert transport.writes[-1].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.writes[-1].endswith(b'"errorCode":"REQUEST_TIMEOUT",'
                                         b'"errorDetails":"the request was not received in time"}')
    assert transport.closing and PROCESS.refused == {"header_timeout": 1}


async def test_a_slow_body_after_the_response_only_closes(limits):
    """The app answered (a 401 before reading the body): no second response, just the close."""
    proto, transport = connect(answer_without_reading)
    proto.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await until(lambda: proto.cycle.response_complete)
    assert proto.reading == http_protocol.BODY
    proto.read_timed_out()
    assert not any(b" 408 " in w for w in transport.writes)
    assert transport.closing and PROCESS.refused == {"body_timeout": 1}


async def test_a_complete_request_is_not_reading(limits):
    proto, _transport = connect(plain)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert proto.reading == http_protocol.IDLE and proto not in proto._deadlines.reading


async def test_a_kept_alive_connection_idle_past_the_keep_alive_timeout_closes_quietly(limits):
    """uvicorn's keep-alive timeout, kept as a deadline swept with the others (no timer armed
    and cancelled per request): no 408, nothing counted as refused."""
    proto, transport = connect(plain)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: proto.cycle.response_complete)
    assert proto.reading == http_protocol.KEPT and proto.timeout_keep_alive_task is None
    assert proto.read_deadline == pytest.approx(proto.loop.time() + proto.timeout_keep_alive,
                                                abs=1.0)
    proto.data_received(b"GET / HTTP/1.1\r\n")  # the next request begins: its head's deadline
    assert proto.reading == http_protocol.HEADERS
    proto.data_received(b"Host: x\r\n\r\n")
    await until(lambda: proto.reading == http_protocol.KEPT)
    n = len(transport.writes)
    proto.read_deadline = 0.0
    proto._deadlines._sweep()
    assert transport.closing and len(transport.writes) == n and PROCESS.refused == {}


async def test_a_connection_answered_before_its_body_is_kept_alive_once_the_body_is_in(limits):
    proto, _transport = connect(answer_without_reading)
    proto.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{")
    await until(lambda: proto.cycle.response_complete)
    assert proto.reading == http_protocol.BODY  # still the body's deadline
    proto.data_received(b"}\n")
    assert proto.reading == http_protocol.KEPT  # then the idle one, not none at all


async def test_overdue_connections_close_a_slice_per_loop_turn(limits):
    protos = [connect(plain) for _ in range(http_protocol.CLOSE_SLICE * 3 + 1)]
    deadlines = protos[0][0]._deadlines
    for proto, _ in protos:
        proto.read_deadline = 0.0
    deadlines._sweep()
    assert sum(t.closing for _, t in protos) == http_protocol.CLOSE_SLICE
    await until(lambda: all(t.closing for _, t in protos))
    assert PROCESS.refused == {"header_timeout": len(protos)}


def test_open_file_limit_raised_to_the_hard_limit(caplog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip("needs a finite hard limit to lower the soft one under")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
    try:
        with caplog.at_level(logging.INFO, logger="flagedge.connections"):
            assert raise_open_files(needed=hard + 1) == (hard // 2, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    text = caplog.text
    assert f"soft {hard // 2} -> {hard}, hard {hard}" in text and "is below the" in text


def test_limits_from_settings():
    limits = ConnectionLimits.from_settings(Settings(
        header_timeout=2, body_timeout=3, max_connections=7, trusted_proxies=("10.0.0.0/8",)))
    assert (limits.header_timeout, limits.body_timeout, limits.max_connections) == (2, 3, 7)
    assert "10.1.2.3" in limits.trusted
    assert connections.files_needed(Settings(max_connections=10, sse_max_connections=5)) == (
        10 + connections.RESERVED_FDS)
