"""Connection limits on a real `flagedge serve` (proxy/server/connections.py, http_protocol.py,
the per-address stream cap of proxy/streams/fanout.py): slow request heads and bodies get a
408 and lose their connection, connections beyond the limit a 503, one client address cannot
take every stream of a key, and the open-file limit is raised and logged."""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.streams_support import DOC, Stream, metric, push
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0  # header/body timeout of the servers here; deadlines are enforced <= 1/4 late
SLACK_S = 2.0  # scheduling on a loaded 2-core machine


@contextmanager
def raw_connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield sock
    finally:
        sock.close()


def drip_until_answered(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Send one more header byte every 0.2 s (a slow-loris client) until the server answers
    and closes; returns what it sent and the seconds that took."""
    began = time.monotonic()
    sock.settimeout(0.2)
    received = b""
    while time.monotonic() - began < deadline_s:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            try:
                sock.sendall(b"x")
            except OSError:  # closed under us: what it said before is in `received`
                break
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - began


def status_and_body(response: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


def test_slow_request_head_gets_408_and_is_closed(proxy_factory):
    server = proxy_factory(extra_args=["--header-timeout", str(TIMEOUT_S)])
    with raw_connection(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        answer, took = drip_until_answered(sock, TIMEOUT_S + SLACK_S + 5)
    status, body = status_and_body(answer)
    assert status == 408 and body["errorCode"] == "REQUEST_TIMEOUT"
    assert b"connection: close" in answer.lower()
    assert TIMEOUT_S * 0.9 <= took <= TIMEOUT_S + SLACK_S, took
    # A connection that never sends a byte goes the same way.
    with raw_connection(server.port) as sock:
        sock.settimeout(TIMEOUT_S + SLACK_S)
        began = time.monotonic()
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - began <= TIMEOUT_S + SLACK_S
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "flagedge_http_connections_refused_total", reason="header_timeout") >= 2


def test_a_kept_alive_connection_is_not_timed_out_between_requests(proxy_factory):
    """The head deadline runs from a request's first byte; the idle gap before it is
    uvicorn's keep-alive timeout (5 s), not ours."""
    server = proxy_factory(extra_args=["--header-timeout", str(TIMEOUT_S)])
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200
        began = time.monotonic()
        wait_until(lambda: time.monotonic() - began > TIMEOUT_S * 2, timeout=5, interval=0.1)
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").text.count('reason="header_timeout"') == 0


def test_slow_body_gets_408(proxy_factory):
    server = proxy_factory(extra_args=["--body-timeout", str(TIMEOUT_S)])
    key = server.create_key("client")
    with raw_connection(server.port) as sock:
        sock.sendall(b"POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nHost: t\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     b'{"context": {"x": "')
        answer, took = drip_until_answered(sock, TIMEOUT_S + SLACK_S + 5)
    status, body = status_and_body(answer)
    assert status == 408 and body["errorCode"] == "REQUEST_TIMEOUT"
    assert took <= TIMEOUT_S + SLACK_S, took
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "flagedge_http_connections_refused_total", reason="body_timeout") == 1


async def test_streams_outlive_the_read_timeouts(proxy_factory):
    server = proxy_factory(extra_args=["--header-timeout", str(TIMEOUT_S),
                                       "--body-timeout", str(TIMEOUT_S)])
    await push(server, DOC)
    key = server.create_key("client")
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c, \
            Stream(c, "/ofrep/v1/events", key=key) as stream:
        with pytest.raises(TimeoutError):  # open well past both deadlines
            await asyncio.wait_for(stream.ended.wait(), TIMEOUT_S * 3)
        await push(server, {"flags": {}})
        assert (await stream.next()).data  # still delivering


def test_connections_beyond_the_limit_get_503_and_are_closed(proxy_factory):
    server = proxy_factory(extra_args=["--max-connections", "3", "--header-timeout", "60"])
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        with httpx.Client(base_url=server.url) as client:
            wait_until(lambda: client.get("/healthz").status_code == 503, timeout=5,
                       what="the limit to be reached")
            r = client.get("/healthz")
            assert r.status_code == 503 and r.json()["errorCode"] == "GENERAL"
            assert r.headers["connection"] == "close" and int(r.headers["retry-after"]) >= 1
    finally:
        for sock in held:
            sock.close()
    # Room again once they are gone; the refusals were counted.
    with httpx.Client(base_url=server.url) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, timeout=5,
                   what="room below the limit")
        text = client.get("/metrics").text
    assert metric(text, "flagedge_http_connections_refused_total", reason="connection_limit") >= 2


def _forwarded(stream: Stream, address: str) -> Stream:
    stream.headers["X-Forwarded-For"] = f"203.0.113.9, {address}"  # left: spoofable, ignored
    return stream


async def test_stream_cap_per_client_address_behind_a_trusted_proxy(proxy_factory):
    server = proxy_factory(extra_args=["--sse-max-per-address", "2",
                                       "--trusted-proxies", "127.0.0.1"])
    await push(server, DOC)
    key = server.create_key("client")
    path = "/v1/stream/evaluated"
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c, \
            _forwarded(Stream(c, path, key=key), "198.51.100.1"), \
            _forwarded(Stream(c, path, key=key), "198.51.100.1"):
        r = await c.get(path, headers={"Authorization": f"Bearer {key}",
                                       "X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["errorCode"] == "TOO_MANY_STREAMS"
        assert "address" in r.json()["errorDetails"]
        # Another user of the same key, from another address, still gets a stream.
        async with _forwarded(Stream(c, path, key=key), "198.51.100.2") as other:
            assert (await other.next()).event == "put"
        text = (await c.get("/metrics")).text
    assert metric(text, "flagedge_sse_refused_total", cap="address") == 1


async def test_forwarded_for_is_ignored_from_untrusted_peers(proxy_factory):
    server = proxy_factory(extra_args=["--sse-max-per-address", "1"])  # no trusted proxies
    await push(server, DOC)
    key = server.create_key("client")
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c, \
            _forwarded(Stream(c, "/ofrep/v1/events", key=key), "198.51.100.1"):
        r = await c.get("/ofrep/v1/events", headers={"Authorization": f"Bearer {key}",
                                                     "X-Forwarded-For": "198.51.100.2"})
        assert r.status_code == 429  # both are 127.0.0.1: the header chose nothing


def test_open_file_limit_raised_and_logged_in_every_worker(proxy_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # inherited by the server
    try:
        server = proxy_factory(extra_args=["--workers", "2"], start=False)
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    line = re.compile(rf"open-file limit \(RLIMIT_NOFILE\): soft \d+ -> {want}, hard {want}")
    # The listening process and both workers, each once its app is built.
    wait_until(lambda: len(line.findall(server.logs())) >= 3, timeout=20,
               what="three open-file limit lines")
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    assert re.search(rf"Max open files\s+{want}\s+{want}", limits), limits
    if hard != resource.RLIM_INFINITY:  # a limit below what the settings need is a warning
        server.stop()
        server.extra_args = ["--max-connections", str(hard + 1)]
        server.start()
        assert "is below the" in server.logs()
