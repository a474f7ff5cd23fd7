"""The OFREP evaluate fast path (proxy/api/fastpath.py) answers exactly what the Starlette
routes answer (status, headers, bytes) for success, 304 and every error, records the same
metrics, and hands every other request to the full stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from proxy.api.fastpath import BULK_ROUTE, SINGLE_ROUTE, FastOfrep
from proxy.config import Settings
from tests.unit.ofrep_app import ENV, App

BULK = "/ofrep/v1/evaluate/flags"
SINGLE = BULK + "/"


def _fast(edge: App) -> FastOfrep:
    fast = edge.app.build_middleware_stack()  # FastOfrep -> ServerErrorMiddleware -> ...
    assert isinstance(fast, FastOfrep)
    return fast


def clients(edge: App, kind: str | None = "client") -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """(fast path, full Starlette stack) clients over the same runtime."""
    slow_stack = _fast(edge)._timed

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = edge.app
        await slow_stack(scope, receive, send)

    headers = {"Authorization": f"Bearer {edge.keys[kind]}"} if kind else {}
    return (edge.client(kind),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://edge",
                              headers=headers))


async def same(edge: App, method: str, path: str, kind: str | None = "client",
               **kw: Any) -> httpx.Response:
    """Send the request through the full stack, then the fast path; both must match."""
    fast, slow = clients(edge, kind)
    async with fast, slow:
        expected = await slow.request(method, path, **kw)
        got = await fast.request(method, path, **kw)
    assert got.status_code == expected.status_code
    assert got.headers.raw == expected.headers.raw
    assert got.content == expected.content
    return got


@pytest.fixture
def edge() -> App:
    return App()


async def test_bulk_success_and_304_match_the_routes(edge):
    r = await same(edge, "POST", BULK, json={"context": {"targetingKey": "u1", "plan": "pro"}})
    assert r.status_code == 200 and r.headers["etag"] and r.json()["eventStreams"]
    etag = r.headers["etag"]
    r = await same(edge, "POST", BULK, json={"context": {"targetingKey": "u1", "plan": "pro"}},
                   headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    r = await same(edge, "POST", BULK, params={"flagConfigEtag": "1"},
                   json={"context": {"targetingKey": "u2"}})
    assert r.status_code == 200
    r = await same(edge, "POST", BULK, content=b"")  # empty body: empty context
    assert r.status_code == 200


async def test_single_success_and_errors_match_the_routes(edge):
    r = await same(edge, "POST", SINGLE + "string-flag", json={"context": {"plan": "pro"}})
    assert r.status_code == 200 and r.json()["value"] == "Welcome back"
    r = await same(edge, "POST", SINGLE + "nope", json={"context": {}})
    assert r.status_code == 404 and r.json()["errorCode"] == "FLAG_NOT_FOUND"
    r = await same(edge, "POST", SINGLE + "bad-target-flag", json={"context": {"boom": True}})
    assert r.status_code == 400 and r.json()["errorCode"] == "GENERAL"
    r = await same(edge, "POST", SINGLE + "bool-flag", json={"context": {"targetingKey": 5}})
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize("path", [BULK, SINGLE + "bool-flag"])
async def test_request_errors_match_the_routes(edge, path):
    cases: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"content": b'{"context": {}}', "headers": {"Content-Type": "text/plain"}},
        {"content": b"[1]", "headers": {"Content-Type": "application/json"}},
        {"json": {"context": [1]}},
        {"json": {"context": {"targetingKey": 7}}},
        {"json": {"context": _nested(12)}},
        {"json": {"context": {f"k{i}": i for i in range(1_001)}}},
    ]
    for kw in cases:
        r = await same(edge, "POST", path, **kw)
        assert r.status_code == 400 and r.json()["errorCode"] in ("PARSE_ERROR",
                                                                  "INVALID_CONTEXT")
    for kind, headers in [(None, {}), (None, {"Authorization": "Basic abc"}),
                          (None, {"X-API-Key": "fe_client_wrong"})]:
        r = await same(edge, "POST", path, kind=kind, headers=headers, json={})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", [BULK, SINGLE + "bool-flag"])
async def test_body_limit_declared_and_chunked_match_the_routes(path):
    edge = App(Settings(env=ENV, body_limit=1024))
    r = await same(edge, "POST", path, json={"context": {"blob": "x" * 2000}})
    assert r.status_code == 413 and r.json()["errorCode"] == "PAYLOAD_TOO_LARGE"

    def chunked() -> httpx.ByteStream:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b" " * 600

        return parts()  # type: ignore[return-value]

    fast, slow = clients(edge)
    async with fast, slow:
        expected = await slow.post(path, content=chunked())
        got = await fast.post(path, content=chunked())
    assert "content-length" not in got.request.headers
    assert (got.status_code, got.headers.raw, got.content) == (
        expected.status_code, expected.headers.raw, expected.content)
    assert got.status_code == 413


async def test_rate_limit_and_unloaded_keys_match_the_routes():
    edge = App(rate_limit=0.001)
    fast, slow = clients(edge)
    async with fast, slow:
        assert (await slow.post(BULK, json={})).status_code == 200  # the one token
        expected = await slow.post(BULK, json={})
        got = await fast.post(BULK, json={})
    assert got.status_code == 429 and got.headers["retry-after"].isdigit()
    assert (got.headers.raw, got.content) == (expected.headers.raw, expected.content)

    edge = App()
    edge.ring.loaded = False
    r = await same(edge, "POST", BULK, kind=None, headers={"X-API-Key": "fe_client_unknown"},
                   json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


async def test_metrics_use_the_route_labels_and_in_flight_returns_to_zero(edge):
    hot = edge.runtime.metrics.hot
    async with edge.client() as c:
        assert (await c.post(BULK, json={})).status_code == 200
        assert (await c.post(SINGLE + "nope", json={})).status_code == 404
        assert (await c.get(BULK)).status_code == 405
    assert hot.requests[(BULK_ROUTE, 200)] == 1
    assert hot.requests[(SINGLE_ROUTE, 404)] == 1
    assert hot.requests[(BULK_ROUTE, 405)] == 1  # through the stack: the route's own label
    assert hot.in_flight == 0
    async with edge.client() as c:
        text = (await c.get("/metrics")).text
    assert 'route="/ofrep/v1/evaluate/flags/{key:path}"' in text


class _Sentinel:
    """The rest of the stack: records that a request was handed on."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
                root_path: str = "") -> int:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "root_path": root_path, "query_string": b"", "headers": headers,
             "http_version": "1.1", "scheme": "http", "server": ("edge", 80), "client": None}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


@pytest.mark.parametrize("cors", [False, True])
async def test_only_the_evaluate_posts_take_the_fast_path(edge, cors):
    real = _fast(edge)
    rest = _Sentinel()
    fast = FastOfrep(rest, edge.runtime.metrics, real._bulk.__self__, cors)  # type: ignore[attr-defined]
    auth = [(b"authorization", f"Bearer {edge.keys['client']}".encode())]
    assert await _call(fast, "POST", BULK, auth) == 200
    assert await _call(fast, "POST", SINGLE + "bool-flag", auth) == 200
    origin = [*auth, (b"origin", b"https://app.example")]
    assert await _call(fast, "POST", BULK, origin) == (299 if cors else 200)
    handed_on = [("GET", BULK, ""), ("OPTIONS", BULK, ""), ("POST", SINGLE, ""),
                 ("POST", "/v1/explain/bool-flag", ""), ("GET", "/healthz", ""),
                 ("POST", BULK + "x", ""), ("POST", "/edge" + BULK, "/edge"),
                 ("POST", SINGLE + "a\nb", ""), ("POST", SINGLE + "ab\n", "")]
    for method, path, root in handed_on:
        assert await _call(fast, method, path, auth, root) == 299
    assert rest.paths == [BULK] * cors + [p for _, p, _ in handed_on]


async def test_cors_still_applies_on_the_evaluate_routes():
    edge = App(Settings(env=ENV, cors_origins=("https://app.example",)))
    async with edge.client() as c:
        pre = await c.options(BULK, headers={"Origin": "https://app.example",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        r = await c.post(BULK, json={}, headers={"Origin": "https://app.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "etag" in r.headers["access-control-expose-headers"].lower()
        r = await c.post(SINGLE + "bool-flag", json={}, headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_an_unexpected_error_is_the_json_500_the_full_stack_gives_and_is_raised(
        edge, monkeypatch, caplog):
    """The fast path sits outside Starlette's error middleware: it answers a bug alike (the
    JSON 500, logged) and re-raises for the server to log its traceback."""
    def broken(*_args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(type(edge.runtime.store), "get", broken)
    for app in (edge.app, _fast(edge)._timed):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list = sent) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": BULK, "raw_path": BULK.encode(),
                 "root_path": "", "query_string": b"", "http_version": "1.1", "scheme": "http",
                 "server": ("edge", 80), "client": None, "app": edge.app,
                 "headers": [(b"authorization", f"Bearer {edge.keys['client']}".encode())]}
        with pytest.raises(RuntimeError, match="boom"):
            await app(scope, receive, send)
        assert sent[0]["status"] == 500
        assert b'"errorCode":"GENERAL"' in sent[1]["body"]
    assert "unhandled error on /ofrep/v1/evaluate/flags" in caplog.text
