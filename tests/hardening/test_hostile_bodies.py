"""Hostile request bodies over real HTTP against a real `flagedge serve`: absurd nesting, huge
arrays and strings, invalid UTF-8, wrong content types, duplicate keys, NaN/Infinity, empty
bodies, bodies just over and far over the limit (also chunked, without Content-Length).

Each gets a fast 4xx with the OFREP error body (bounded by a client timeout), the server's
memory stays within a small bound (RSS via psutil), and it keeps serving afterwards."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import orjson
import psutil
import pytest

from tests.hardening.conftest import BULK, ProxyServer, env_doc, http, ofrep_error_body

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024  # a large limit, so the parser (not just the size check) sees these
FAST_S = 2.0
JSON = {"content-type": "application/json"}


@pytest.fixture
def hostile(proxy_factory) -> tuple[ProxyServer, str, str]:
    server = proxy_factory(env="alpha", extra_args=["--body-limit", str(LIMIT)])
    server.push(env_doc("alpha"), env="alpha")
    client_key = server.create_key("client", env="alpha")
    server_key = server.create_key("server", env="alpha")
    return server, client_key, server_key


def rss(server: ProxyServer) -> int:
    assert server.proc is not None
    return psutil.Process(server.proc.pid).memory_info().rss


def deep(n: int, open_: str = "[", close: str = "]", inner: str = "0") -> bytes:
    return (open_ * n + inner + close * n).encode()


CASES: dict[str, tuple[bytes, dict[str, str], tuple[int, ...], str | None]] = {
    # name: (body, headers, allowed statuses, expected errorCode)
    "100k-deep array": (deep(100_000), JSON, (400,), "PARSE_ERROR"),
    "100k-deep context object": (b'{"context": ' + deep(100_000, '{"a":', "}") + b"}", JSON,
                                 (400,), "PARSE_ERROR"),
    "600-deep context (orjson reads it)": (
        b'{"context": {"a": ' + deep(600) + b"}}", JSON, (400,), "INVALID_CONTEXT"),
    "300k-item array": (b'{"context": {"a": [' + b"0," * 299_999 + b"0]}}", JSON, (400,),
                        "INVALID_CONTEXT"),
    "100k keys": (orjson.dumps({"context": {f"k{i}": i for i in range(60_000)}}), JSON, (400,),
                  "INVALID_CONTEXT"),
    "invalid UTF-8": (b'{"context": {"plan": "\xff\xfe\xc3("}}', JSON, (400,), "PARSE_ERROR"),
    "lone surrogate escape": (b'{"context": {"plan": "\\ud800"}}', JSON, (400, 200), None),
    "text/plain": (b'{"context": {}}', {"content-type": "text/plain"}, (400,), "PARSE_ERROR"),
    "form": (b"context=1", {"content-type": "application/x-www-form-urlencoded"}, (400,),
             "PARSE_ERROR"),
    "multipart": (b"--b\r\nContent-Disposition: form-data; name=context\r\n\r\n{}\r\n--b--\r\n",
                  {"content-type": "multipart/form-data; boundary=b"}, (400,), "PARSE_ERROR"),
    "xml": (b"<context/>", {"content-type": "application/xml"}, (400,), "PARSE_ERROR"),
    "NaN literal": (b'{"context": {"a": NaN}}', JSON, (400,), "PARSE_ERROR"),
    "Infinity literal": (b'{"context": {"a": Infinity}}', JSON, (400,), "PARSE_ERROR"),
    "-Infinity literal": (b'{"context": {"a": -Infinity}}', JSON, (400,), "PARSE_ERROR"),
    "huge number": (b'{"context": {"a": 1' + b"0" * 5000 + b"}}", JSON, (400, 200), None),
    "duplicate targetingKey, last not a string": (
        b'{"context": {"targetingKey": "u", "targetingKey": 5}}', JSON, (400,), "INVALID_CONTEXT"),
    "duplicate context, last not an object": (b'{"context": {}, "context": 5}', JSON, (400,),
                                              "INVALID_CONTEXT"),
    "array body": (b"[]", JSON, (400,), "PARSE_ERROR"),
    "string body": (b'"context"', JSON, (400,), "PARSE_ERROR"),
    "truncated": (b'{"context": {"a": ', JSON, (400,), "PARSE_ERROR"),
    "NUL bytes": (b"\x00" * 1000, JSON, (400,), "PARSE_ERROR"),
    "BOM": (b'\xef\xbb\xbf{"context": {}}', JSON, (400, 200), None),
    "targetingKey object": (b'{"context": {"targetingKey": {"a": 1}}}', JSON, (400,),
                            "INVALID_CONTEXT"),
}


@pytest.mark.parametrize("path", [BULK, BULK + "/shared", "/v1/explain/shared"])
def test_hostile_bodies_get_fast_ofrep_4xx_with_bounded_memory(hostile, path) -> None:
    server, client_key, server_key = hostile
    key = server_key if path.startswith("/v1/") else client_key
    with http(server, key) as c:
        c.post(BULK, json={})  # warm up before the baseline
        before = rss(server)
        for name, (body, headers, statuses, code) in CASES.items():
            for _ in range(3):
                start = time.monotonic()
                r = c.post(path, content=body, headers=headers)
                took = time.monotonic() - start
                assert r.status_code in statuses, (name, r.status_code, r.content[:200])
                assert took < FAST_S, (name, took)
                if r.status_code >= 400:
                    error = ofrep_error_body(r)
                    if code is not None:
                        assert error["errorCode"] == code, (name, error)
        grown = rss(server) - before
        assert grown < 64 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB"
        ok = c.post(path, json={"context": {"plan": "pro"}})
        assert ok.status_code == 200


def test_duplicate_keys_last_one_wins_consistently(hostile) -> None:
    server, client_key, _ = hostile
    with server.client(client_key) as c:
        r = c.post(BULK + "/shared", content=b'{"context": {"plan": "free", "plan": "pro"}}',
                   headers=JSON)
        assert r.status_code == 200 and r.json()["value"] == "alpha-b"
        r = c.post(BULK + "/shared", content=b'{"context": {"plan": "pro", "plan": "free"}}',
                   headers=JSON)
        assert r.status_code == 200 and r.json()["value"] == "alpha-a"


def test_empty_and_whitespace_bodies_are_an_empty_context(hostile) -> None:
    server, client_key, _ = hostile
    with server.client(client_key) as c:
        for body, headers in ((b"", {}), (b"", JSON), (b"  \n", JSON), (b"{}", JSON),
                              (b'{"context": null}', JSON)):
            r = c.post(BULK + "/shared", content=body, headers=headers)
            assert r.status_code == 200 and r.json()["value"] == "alpha-a", (body, r.text)


def raw_post(server: ProxyServer, key: str, head: bytes, chunks: Iterator[bytes],
             timeout: float = 5.0) -> tuple[bytes, int]:
    """Send a request over a plain socket, stopping when the server answers or hangs up;
    returns (what it answered, bytes of body sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head.replace(b"KEY", key.encode()))
        s.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if answer:
                break
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except (BlockingIOError, ConnectionError):
                break
        s.setblocking(True)
        s.settimeout(timeout)
        try:
            while b"\r\n\r\n" not in answer:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionError, TimeoutError):
            pass
    return answer, sent


def test_bodies_just_over_and_far_over_the_limit(hostile) -> None:
    server, client_key, _ = hostile
    before = rss(server)
    with http(server, client_key) as c:
        pad = LIMIT - len(b'{"context": {"a": ""}}')
        exact = b'{"context": {"a": "' + b"x" * pad + b'"}}'
        assert len(exact) == LIMIT
        assert c.post(BULK, content=exact, headers=JSON).status_code == 200
        r = c.post(BULK, content=exact + b" ", headers=JSON)  # one byte over
        assert r.status_code == 413 and ofrep_error_body(r)["errorCode"] == "PAYLOAD_TOO_LARGE"

        def one_byte_over() -> Iterator[bytes]:  # chunked: no Content-Length to check first
            yield exact
            yield b" "

        r = c.post(BULK, content=one_byte_over(), headers=JSON)
        assert r.status_code == 413 and ofrep_error_body(r)["errorCode"] == "PAYLOAD_TOO_LARGE"
        # Declared far over: refused before reading anything.
        start = time.monotonic()
        answer, _ = raw_post(server, client_key,
                             b"POST " + BULK.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                             b"Authorization: Bearer KEY\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 10000000000\r\n\r\n",
                             iter([b"{" * 65536] * 10))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - start < FAST_S

    # Far over, chunked, no Content-Length: 200 MB offered, the server stops at the limit.
    start = time.monotonic()
    head = (b"POST " + BULK.encode() + b" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer KEY\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    block = b"[" * 65536
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    answer, sent = raw_post(server, client_key, head, iter([chunk] * 3200))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 64 * LIMIT  # it did not swallow the 200 MB
    assert time.monotonic() - start < 10.0
    assert rss(server) - before < 64 * 1024 * 1024
    with server.client(client_key) as c:
        assert c.post(BULK, json={}).status_code == 200


def test_many_large_distinct_contexts_do_not_pile_up_in_memory(hostile) -> None:
    """Each bulk result is cached under its canonical context: large contexts that never
    repeat must not make the cache hold hundreds of MB (10,000 entries x 60 KB)."""
    server, client_key, _ = hostile
    with http(server, client_key) as c:
        for i in range(50):
            c.post(BULK, json={"context": {"targetingKey": f"warm-{i}", "pad": "y" * 60_000}})
        before = rss(server)
        for i in range(2_000):
            r = c.post(BULK, json={"context": {"targetingKey": f"u-{i}", "pad": "x" * 60_000}})
            assert r.status_code == 200
        grown = rss(server) - before
    assert grown < 48 * 1024 * 1024, f"RSS grew {grown / 1e6:.0f} MB for 2,000 large contexts"


def test_hostile_stream_contexts(hostile) -> None:
    server, client_key, _ = hostile

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    cases = {
        "deep": (b64(b'{"a": ' + deep(600) + b"}"), "INVALID_CONTEXT"),
        "too deep for the parser": (b64(deep(2000, '{"a":', "}")), "PARSE_ERROR"),
        "huge": (b64(orjson.dumps({"a": "x" * 20_000})), "INVALID_CONTEXT"),
        "invalid UTF-8": (b64(b'{"a": "\xff"}'), "PARSE_ERROR"),
        "NaN": (b64(b'{"a": NaN}'), "PARSE_ERROR"),
        "not base64": ("%%%***", "PARSE_ERROR"),
        "array": (b64(b"[1]"), "INVALID_CONTEXT"),
        "targetingKey number": (b64(b'{"targetingKey": 1}'), "INVALID_CONTEXT"),
    }
    with http(server, client_key, 5.0) as c:
        for name, (ctx, code) in cases.items():
            start = time.monotonic()
            r = c.get("/v1/stream/evaluated", params={"context": ctx})
            assert r.status_code == 400, (name, r.status_code, r.content[:200])
            assert ofrep_error_body(r)["errorCode"] == code, name
            assert time.monotonic() - start < FAST_S, name
