"""Keys, stream tokens and contexts never reach the logs (or /metrics): a whole run at debug
level exercising every way a secret can arrive (Bearer, X-API-Key, ``?key=`` on stream and
non-stream URLs, ``?token=``, ``?context=``, context values in bodies) and every outcome
(200, 304, 400, 401, 403, 404, 413, 429, revoked keys, open streams closed by a push and by
shutdown). The server's stdout and stderr are captured whole."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from tests.hardening.conftest import BULK, b64_context, env_doc
from tests.integration.streams_support import Stream

pytestmark = pytest.mark.integration

MARK = "ctxmarker7f3a"  # inside context values: must never be logged either


async def test_no_key_token_or_context_value_in_server_output(proxy_factory) -> None:
    server = proxy_factory(env="alpha", extra_args=["--log-level", "debug",
                                                    "--body-limit", "4096"])
    server.push(env_doc("alpha"), env="alpha")
    ckey = server.create_key("client", env="alpha")
    skey = server.create_key("server", env="alpha")
    akey = server.create_key("admin", env="alpha")
    limited = server.create_key("client", env="alpha", rate_limit=0.5)
    doomed = server.create_key("client", env="alpha")
    unknown = "fe_client_" + "Z" * 43  # well-formed, never issued
    ctx = {"targetingKey": f"user-{MARK}", "email": f"{MARK}@example.com", "plan": "pro"}
    ctx_param = b64_context(ctx)
    bad_ctx_param = base64.urlsafe_b64encode(b'{"a": "' + MARK.encode() + b'"').decode()
    secrets = [ckey, skey, akey, limited, doomed, unknown, ctx_param, bad_ctx_param, MARK]

    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c:
        def bearer(k: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {k}"}

        bulk = await c.post(BULK, json={"context": ctx}, headers=bearer(ckey))
        uri = bulk.json()["eventStreams"][0]["endpoint"]["requestUri"]
        token = parse_qs(urlsplit(uri).query)["token"][0]
        secrets.append(token)
        etag = bulk.headers["etag"]
        calls = [
            ("POST", BULK, {"json": {"context": ctx}, "headers": bearer(ckey) | {"If-None-Match": etag}}),
            ("POST", f"{BULK}/shared", {"json": {"context": ctx}, "headers": {"X-API-Key": ckey}}),
            ("POST", f"{BULK}/secret-alpha?key={ckey}&context={ctx_param}", {"json": {}}),
            ("POST", f"{BULK}?token={token}&flagConfigEtag=99", {"json": {}, "headers": bearer(ckey)}),
            ("POST", f"{BULK}/nope", {"json": {"context": ctx}, "headers": bearer(ckey)}),
            ("POST", BULK, {"json": {"context": {"targetingKey": [MARK]}}, "headers": bearer(ckey)}),
            ("POST", BULK, {"content": b'{"context": {"a": "' + MARK.encode() + b'"',
                            "headers": bearer(ckey) | {"content-type": "application/json"}}),
            ("POST", BULK, {"json": {"context": {"pad": MARK * 1000}}, "headers": bearer(ckey)}),
            ("POST", BULK, {"json": {}, "headers": bearer(unknown)}),
            ("POST", BULK, {"json": {}, "headers": {"Authorization": f"Basic {ckey}"}}),
            ("POST", "/v1/explain/shared", {"json": {"context": ctx}, "headers": bearer(ckey)}),
            ("POST", "/v1/explain/shared", {"json": {"context": ctx}, "headers": bearer(skey)}),
            ("GET", f"/v1/rules?key={skey}", {}),
            ("GET", "/v1/rules", {"headers": bearer(skey)}),
            ("GET", "/v1/envs", {"headers": bearer(akey)}),
            ("GET", f"/v1/stream/rules?token={token}", {}),
            ("GET", f"/v1/stream/evaluated?key={ckey}&context={bad_ctx_param}", {}),
            ("GET", f"/ofrep/v1/events?key={unknown}", {}),
            ("GET", f"/ofrep/v1/events?token={token}x", {}),
            ("GET", f"/no/such/route?key={ckey}&context={ctx_param}", {}),
        ]
        statuses = []
        for method, url, kw in calls:
            statuses.append((await c.request(method, url, **kw)).status_code)
        for _ in range(4):
            statuses.append((await c.post(BULK, json={}, headers=bearer(limited))).status_code)
        assert {200, 304, 400, 401, 403, 404, 413, 429} <= set(statuses), statuses

        async with Stream(c, uri) as s1, \
                Stream(c, f"/v1/stream/evaluated?key={ckey}&context={ctx_param}") as s2, \
                Stream(c, f"/v1/stream/evaluated?token={token}&context={ctx_param}") as s3, \
                Stream(c, f"/v1/stream/rules?key={skey}") as s4, \
                Stream(c, f"/ofrep/v1/events?key={doomed}") as s5:
            await s2.next()
            await s4.next()
            await s1.next(data_only=False)
            await s3.next()
            await s5.next(data_only=False)
            doc = env_doc("alpha")
            doc["flags"]["shared"]["targeting"] = {
                "if": [{"in": [MARK, {"var": "email"}]}, "a", "b"]}
            await asyncio.to_thread(server.push, doc, "alpha")
            assert (await s2.next()).event == "patch"
            await asyncio.to_thread(server.revoke_key, doomed)  # closes s5 (logged)
            await s5.wait_ended(timeout=5)
        metrics = (await c.get("/metrics")).text
    code = await asyncio.to_thread(server.stop)
    assert code is not None
    output = server.logs()
    assert "DEBUG" in output or "debug" in output.lower() or len(output) > 1000, output[-500:]
    assert "closed 1 streams of key" in output  # the revocation was logged, by id
    for secret in secrets:
        assert secret not in output, f"{secret[:16]}... appears in the server output"
        assert secret not in metrics, f"{secret[:16]}... appears in /metrics"
    # Nor any recognisable piece of a key or token (a 16-character window of each).
    for secret in (ckey, skey, akey, token):
        body = secret.split("_")[-1] if secret.startswith("fe_") else secret
        for i in range(0, len(body) - 16, 8):
            assert body[i:i + 16] not in output, "part of a secret was logged"
    assert orjson.dumps(ctx).decode() not in output
