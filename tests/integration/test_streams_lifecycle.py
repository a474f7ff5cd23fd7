"""Stream lifecycle on a real server: revoked keys, a stalled reader, caps, SIGTERM, logs."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from typing import Any

import httpx
import orjson
import pytest

from proxy.model import id_version
from tests.integration.streams_support import (
    DOC,
    Stream,
    b64_context,
    color,
    doc_with,
    metric,
    push,
    state_id_in_redis,
    vid,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def client_for():
    clients: list[httpx.AsyncClient] = []

    def make(server) -> httpx.AsyncClient:
        c = httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None))
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


async def test_revoked_key_stream_is_closed(proxy_server, client_for):
    await push(proxy_server, DOC)
    client = client_for(proxy_server)
    key = proxy_server.create_key("client")
    other = proxy_server.create_key("client")
    ctx = {"context": b64_context({"targetingKey": "u"})}
    bulk = await client.post("/ofrep/v1/evaluate/flags", json={},
                             headers={"Authorization": f"Bearer {key}"})
    token_uri = bulk.json()["eventStreams"][0]["endpoint"]["requestUri"]
    async with Stream(client, "/v1/stream/evaluated", key=key, params=ctx) as mine, \
            Stream(client, f"/ofrep/v1/events?key={key}") as by_param, \
            Stream(client, token_uri) as by_token, \
            Stream(client, "/ofrep/v1/events", key=other) as kept:
        await mine.next()
        await asyncio.to_thread(proxy_server.revoke_key, key)
        for s in (mine, by_param, by_token):
            await s.wait_ended(timeout=5)
            assert s.error is None  # closed cleanly by the server
        assert not kept.ended.is_set()
        v2 = await push(proxy_server, doc_with(color=color("blue")))
        assert (await kept.next()).id == state_id_in_redis(proxy_server.redis_client,
                                                           proxy_server.env, v2)
    r = await client.get("/ofrep/v1/events", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    assert (await client.get(token_uri)).status_code == 401  # its stream token died with it


async def test_stalled_reader_does_not_delay_others(proxy_server, client_for):
    """A rules-stream client with a tiny receive window never reads; pushes of large
    changes fill its socket, its queue coalesces, and a live reader still gets every
    version promptly."""
    big = "x" * 400_000
    await push(proxy_server, doc_with(big={"state": "ENABLED", "variants": {"v": big},
                                           "defaultVariant": "v"}))
    skey = proxy_server.create_key("server")
    ckey = proxy_server.create_key("client")
    client = client_for(proxy_server)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", proxy_server.port))
    stalled.sendall(f"GET /v1/stream/rules HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {skey}"
                    "\r\n\r\n".encode())
    try:
        async with Stream(client, "/ofrep/v1/events", key=ckey) as live:
            await live.next(data_only=False)
            for i in range(25):
                start = time.monotonic()
                version = await push(proxy_server, doc_with(big={
                    "state": "ENABLED", "variants": {"v": big + str(i)}, "defaultVariant": "v"}))
                note = await live.next(timeout=5)
                assert vid(note) == version
                assert time.monotonic() - start < 5
        text = (await client.get("/metrics")).text
        assert metric(text, "flagedge_sse_events_total", stream="rules", outcome="coalesced") >= 1
        assert metric(text, "flagedge_sse_connections", stream="rules") == 1
        assert note.id == state_id_in_redis(proxy_server.redis_client, proxy_server.env, version)
    finally:
        stalled.close()


class ChunkedSse:
    """Reads a raw HTTP/1.1 SSE response off a blocking socket: its chunked framing checked
    byte by byte, its events parsed (name -> value per event)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.raw, self.text = sock, b"", ""
        self.events: list[dict[str, str]] = []

    def _need(self, n: int, deadline: float) -> None:
        while len(self.raw) < n:
            assert time.monotonic() < deadline, "stream stopped short"
            chunk = self.sock.recv(1 << 16)
            assert chunk, "connection closed"
            self.raw += chunk

    def head(self, deadline: float) -> bytes:
        while b"\r\n\r\n" not in self.raw:
            self._need(len(self.raw) + 1, deadline)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding: chunked" in head.lower()
        return head

    def until(self, done: Any, deadline: float) -> None:
        while not done(self.events):
            while b"\r\n" not in self.raw:
                self._need(len(self.raw) + 1, deadline)
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)  # a malformed size line fails here
            self.raw = rest
            self._need(size + 2, deadline)
            assert self.raw[size:size + 2] == b"\r\n", "chunk not terminated"
            self.text += self.raw[:size].decode()
            self.raw = self.raw[size + 2:]
            *blocks, self.text = self.text.split("\n\n")
            for block in blocks:
                fields = dict(line.split(": ", 1) for line in block.splitlines()
                              if ": " in line)
                if fields:
                    self.events.append(fields)


def big_value(event: dict[str, str]) -> str | None:
    payload = orjson.loads(event["data"]) if "data" in event else {}
    flags = payload.get("document", payload).get("flags", {}) if isinstance(payload, dict) else {}
    return flags["big"]["variants"]["v"] if "big" in flags else None


async def test_a_reader_that_stalls_then_catches_up_gets_every_byte_in_order(proxy_factory):
    """Events go straight to an idle stream's socket, queue while it is full, coalesce into a
    snapshot over the bound, then flow again: the reader sees well-formed chunks, strictly
    rising versions and, at the end, the newest state."""
    server = proxy_factory(environ={"FLAGEDGE_SSE_COALESCE_MS": "0"})  # a round per change
    await push(server, DOC)
    skey = server.create_key("server")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    reader = ChunkedSse(sock)
    try:
        sock.sendall(f"GET /v1/stream/rules HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                     f"{skey}\r\n\r\n".encode())
        deadline = time.monotonic() + 30
        await asyncio.to_thread(reader.head, deadline)
        await asyncio.to_thread(reader.until, lambda ev: any("data" in e for e in ev), deadline)
        versions = []
        for i in range(20):  # ~3 MB in all, never read meanwhile: over every buffer and bound
            versions.append(await push(server, doc_with(big={
                "state": "ENABLED", "variants": {"v": f"{i:02d}" * 75_000},
                "defaultVariant": "v"})))
        await asyncio.to_thread(reader.until, lambda ev: any(
            id_version(e.get("id")) == versions[-1] for e in ev), deadline)
    finally:
        sock.close()
    ids = [id_version(e["id"]) for e in reader.events if "id" in e]
    assert ids == sorted(set(ids)), ids  # strictly rising: nothing reordered or repeated
    assert ids[-1] == versions[-1]
    last_id = [e["id"] for e in reader.events if "id" in e][-1]
    assert last_id == state_id_in_redis(server.redis_client, server.env, versions[-1])
    newest = [v for v in map(big_value, reader.events) if v is not None][-1]
    assert newest == "19" * 75_000
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "flagedge_sse_events_total", stream="rules", outcome="coalesced") >= 1


async def test_connection_caps_per_key_and_per_process(proxy_factory, client_for):
    server = proxy_factory(environ={"FLAGEDGE_SSE_MAX_PER_KEY": "2",
                                    "FLAGEDGE_SSE_MAX_CONNECTIONS": "3"})
    await push(server, DOC)
    client = client_for(server)
    k1 = server.create_key("client")
    k2 = server.create_key("client")
    async with Stream(client, "/ofrep/v1/events", key=k1), \
            Stream(client, "/ofrep/v1/events", key=k1):
        r = await client.get("/ofrep/v1/events", headers={"Authorization": f"Bearer {k1}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        async with Stream(client, "/ofrep/v1/events", key=k2):
            r = await client.get("/ofrep/v1/events", headers={"Authorization": f"Bearer {k2}"})
            assert r.status_code == 503
    # released: room again (the server notices the disconnects)
    async def reopened() -> None:
        while True:
            async with client.stream("GET", "/ofrep/v1/events",
                                     headers={"Authorization": f"Bearer {k1}"}) as r:
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reopened(), timeout=5)


async def test_sigterm_closes_streams_cleanly(proxy_server, client_for):
    await push(proxy_server, DOC)
    client = client_for(proxy_server)
    ckey = proxy_server.create_key("client")
    skey = proxy_server.create_key("server")
    ctx = {"context": b64_context({"targetingKey": "u"})}
    async with Stream(client, "/ofrep/v1/events", key=ckey) as a, \
            Stream(client, "/v1/stream/rules", key=skey) as b, \
            Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx) as c:
        await b.next()
        await c.next()
        start = time.monotonic()
        code = await asyncio.to_thread(proxy_server.stop, 15)
        for s in (a, b, c):
            await s.wait_ended(timeout=5)
            assert s.error is None, s.error  # the body ended properly, no cut connection
        # uvicorn re-raises the caught SIGTERM after a graceful shutdown: -15 is a clean exit
        assert code in (0, -signal.SIGTERM)
        assert time.monotonic() - start < 10
    logs = proxy_server.logs()
    assert "closed 3 streams" in logs and "flagedge stopped" in logs, logs[-2000:]


async def test_query_strings_never_logged(proxy_server, client_for):
    await push(proxy_server, DOC)
    client = client_for(proxy_server)
    key = proxy_server.create_key("client")
    bulk = await client.post("/ofrep/v1/evaluate/flags", json={},
                             headers={"Authorization": f"Bearer {key}"})
    uri = bulk.json()["eventStreams"][0]["endpoint"]["requestUri"]
    token = re.search(r"token=([^&]+)", uri).group(1)
    ctx = b64_context({"targetingKey": "secret-user-42"})
    async with Stream(client, uri) as s1, \
            Stream(client, f"/v1/stream/evaluated?key={key}&context={ctx}") as s2:
        await s1.next(data_only=False)
        await s2.next()
    await asyncio.to_thread(proxy_server.stop)
    logs = proxy_server.logs()
    assert "/ofrep/v1/events" in logs or "GET" in logs or logs  # something was logged
    for secret in (key, token, ctx):
        assert secret not in logs


async def test_cors_headers_on_streams_and_head(proxy_factory, client_for):
    server = proxy_factory(extra_args=["--cors-origins", "https://a.example,https://b.example"])
    await push(server, DOC)
    client = client_for(server)
    key = server.create_key("client")
    for origin in ("https://a.example", "https://b.example", "https://a.example"):
        async with client.stream("GET", f"/ofrep/v1/events?key={key}",
                                 headers={"Origin": origin}) as r:
            assert r.status_code == 200
            assert r.headers.get_list("access-control-allow-origin") == [origin]
            assert r.headers["content-type"].startswith("text/event-stream")
    async with client.stream("GET", f"/ofrep/v1/events?key={key}") as r:  # no Origin
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    head = await client.head(f"/ofrep/v1/events?key={key}", headers={"Origin": "https://b.example"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers.get_list("access-control-allow-origin") == ["https://b.example"]
