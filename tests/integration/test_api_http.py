"""The OFREP HTTP surface of a real `flagedge serve` (uvicorn subprocess, real redis-server),
driven with httpx: ETag/304 across pushes, CORS, error bodies, rate limits, metrics."""

from __future__ import annotations

import copy

import httpx
import pytest

pytestmark = pytest.mark.integration

BULK = "/ofrep/v1/evaluate/flags"
DOC = {
    "flags": {
        "banner": {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "off",
                   "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}},
        "copy": {"state": "ENABLED", "variants": {"a": "Hello", "b": "Hi"}, "defaultVariant": "a"},
    },
}


def flags(response: httpx.Response) -> dict:
    return {f["key"]: f for f in response.json()["flags"]}


def test_etag_304_and_pushes(proxy_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    pro = {"context": {"targetingKey": "u1", "plan": "pro"}}
    with proxy_server.client(key) as c:
        first = c.post(BULK, json=pro)
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert flags(first)["banner"]["value"] is True
        nm = c.post(BULK, json=pro, headers={"If-None-Match": etag})
        assert nm.status_code == 304 and nm.content == b""

        # A push that changes only what free users see: this context's ETag stays.
        doc = copy.deepcopy(DOC)
        doc["flags"]["banner"]["variants"]["off"] = False
        doc["flags"]["banner"]["targeting"] = {
            "if": [{"==": [{"var": "plan"}, "pro"]}, "on",
                   {"==": [{"var": "plan"}, "free"]}, "off", None]}
        proxy_server.push(doc)
        same = c.post(BULK, json=pro, headers={"If-None-Match": etag})
        assert same.status_code == 304

        # A push that changes this context's result: new ETag, new value.
        doc["flags"]["copy"]["defaultVariant"] = "b"
        proxy_server.push(doc)
        changed = c.post(BULK, json=pro, headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert flags(changed)["copy"]["value"] == "Hi"

        # Every replica computes the same ETag for the same rules and context.
        other = c.post(BULK, json=pro)
        assert other.headers["etag"] == changed.headers["etag"]


def test_errors_have_ofrep_bodies(proxy_factory):
    server = proxy_factory(extra_args=["--body-limit", "2048"])
    server.push(DOC)
    client_key = server.create_key("client")
    with server.client(client_key) as c:
        r = c.post(BULK + "/banner", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["errorCode"] == "PARSE_ERROR"
        assert r.json()["key"] == "banner"
        r = c.post(BULK + "/banner", json={"context": {"targetingKey": ["x"]}})
        assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
        r = c.post(BULK, json={"context": {"targetingKey": 5}})
        assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
        r = c.post(BULK + "/ghost", json={})
        assert r.status_code == 404 and r.json() == {
            "key": "ghost", "errorCode": "FLAG_NOT_FOUND", "errorDetails": r.json()["errorDetails"]}
        r = c.post(BULK, json={"context": {"pad": "x" * 5000}})
        assert r.status_code == 413 and r.json()["errorCode"] == "PAYLOAD_TOO_LARGE"
        r = c.post("/v1/explain/banner", json={})
        assert r.status_code == 403 and r.json()["errorCode"] == "FORBIDDEN"
    with server.client(None) as c:
        r = c.post(BULK, json={})
        assert r.status_code == 401 and r.json()["errorCode"] == "UNAUTHORIZED"
        r = c.post(BULK, json={}, headers={"X-API-Key": "fe_client_forged"})
        assert r.status_code == 401
    server_key = server.create_key("server")
    with server.client(server_key) as c:
        r = c.post("/v1/explain/banner", json={"context": {"plan": "pro"}})
        assert r.status_code == 200 and r.json()["result"]["variant"] == "on" and r.json()["path"]


def test_rate_limit_and_revocation(proxy_server):
    proxy_server.push(DOC)
    limited = proxy_server.create_key("client", rate_limit=0.5)
    with proxy_server.client(limited) as c:
        # create_key's readiness probe already spent the one-token burst.
        statuses = [c.post(BULK, json={}).status_code for _ in range(3)]
        assert set(statuses) <= {200, 429} and 429 in statuses
        r = c.post(BULK, json={})
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()
        assert int(r.headers["retry-after"]) >= 1 and r.json()["errorCode"] == "RATE_LIMITED"
    key = proxy_server.create_key("client")
    with proxy_server.client(key) as c:  # buckets are per key: this one is not limited
        assert all(c.post(BULK, json={}).status_code == 200 for _ in range(5))
    proxy_server.revoke_key(key)
    from tests.redis_server import wait_until

    wait_until(lambda: not proxy_server.key_works(key), timeout=5, what="revocation")


def test_cors_preflight(proxy_factory):
    server = proxy_factory(extra_args=["--cors-origins", "https://shop.example,https://b.example"])
    server.push(DOC)
    with server.client(None) as c:
        pre = c.options(BULK, headers={"Origin": "https://shop.example",
                                       "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "Authorization,Content-Type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        assert "if-none-match" in pre.headers["access-control-allow-headers"].lower()
        assert int(pre.headers["access-control-max-age"]) >= 600
        denied = c.options(BULK, headers={"Origin": "https://evil.example",
                                          "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in denied.headers


def test_metrics_content(proxy_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    with proxy_server.client(key) as c:
        for _ in range(3):
            c.post(BULK, json={"context": {"plan": "pro"}})
        c.post(BULK + "/banner", json={"context": {"plan": "free"}})
    with proxy_server.client(None) as c:
        text = c.get("/metrics").text
    assert 'flagedge_evaluations_total{env="test",flag="banner",reason="TARGETING_MATCH",variant="on"} 3.0' in text
    assert 'flagedge_evaluations_total{env="test",flag="banner",reason="DEFAULT",variant="off"} 2.0' in text  # + create_key's probe
    assert 'flagedge_http_requests_total{route="/ofrep/v1/evaluate/flags",status="200"}' in text
    assert 'flagedge_ruleset_version{env="test"} 1.0' in text
    assert 'flagedge_source_connected{env="*"} 1.0' in text
    assert 'flagedge_result_cache_lookups_total{outcome="hit"} 2.0' in text
    assert "flagedge_ruleset_age_seconds" in text and "flagedge_change_propagation_seconds" in text


def test_access_log_has_no_query_strings_or_keys(proxy_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    with proxy_server.client(None) as c:
        c.post(f"{BULK}?flagConfigEtag=1&token=secret-token-value", json={},
               headers={"Authorization": f"Bearer {key}"})
    proxy_server.stop()
    logs = proxy_server.logs()
    assert "POST /ofrep/v1/evaluate/flags HTTP" in logs
    assert key not in logs and "secret-token-value" not in logs and "flagConfigEtag" not in logs
