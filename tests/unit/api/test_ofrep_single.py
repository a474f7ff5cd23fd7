"""POST /ofrep/v1/evaluate/flags/{key}: OFREP success and error bodies, in process."""

from __future__ import annotations

import orjson
import pytest

from proxy.config import Settings
from proxy.sources.file import FileSource
from tests.unit.ofrep_app import ENV, App

URL = "/ofrep/v1/evaluate/flags/"


@pytest.fixture
def edge() -> App:
    return App()


async def post(app: App, key: str, context=None, kind: str | None = "client", **kw):
    async with app.client(kind) as c:
        if "content" in kw:
            return await c.post(URL + key, **kw)
        return await c.post(URL + key, json={} if context is None else {"context": context}, **kw)


@pytest.mark.parametrize(("key", "value", "variant", "reason"), [
    ("bool-flag", True, "on", "STATIC"),
    ("int-flag", 1, "small", "STATIC"),
    ("object-flag", {"limit": 5}, "cfg", "STATIC"),
    ("whole-float-flag", 2.0, "b", "STATIC"),
])
async def test_static_flags(edge, key, value, variant, reason):
    r = await post(edge, key)
    assert r.status_code == 200
    body = r.json()
    assert body["key"] == key and body["value"] == value
    assert body["variant"] == variant and body["reason"] == reason
    assert type(body["value"]) is type(value)
    assert body["metadata"]["flagSetId"] == "unit"


async def test_targeting_match_and_default(edge):
    hit = (await post(edge, "string-flag", {"plan": "pro"})).json()
    assert (hit["value"], hit["variant"], hit["reason"]) == ("Welcome back", "pro", "TARGETING_MATCH")
    miss = (await post(edge, "string-flag", {"plan": "free"})).json()
    assert (miss["value"], miss["variant"], miss["reason"]) == ("Hello", "basic", "DEFAULT")


async def test_float_flag_with_integer_variant_is_sent_as_float(edge):
    r = await post(edge, "float-flag")
    assert b'"value":1.0' in r.content  # the Python provider checks isinstance(value, float)
    assert r.json()["value"] == 1.0
    ints = await post(edge, "int-flag")
    assert b'"value":1,' in ints.content or b'"value":1}' in ints.content


async def test_disabled_and_no_default_have_null_variant_and_no_value(edge):
    for key, reason in (("disabled-flag", "DISABLED"), ("no-default-flag", "DEFAULT")):
        body = (await post(edge, key)).json()
        assert body["reason"] == reason
        assert "variant" in body and body["variant"] is None
        assert "value" not in body


async def test_fractional_is_stable_per_targeting_key(edge):
    seen = set()
    for i in range(40):
        a = (await post(edge, "split-flag", {"targetingKey": f"user-{i}"})).json()
        b = (await post(edge, "split-flag", {"targetingKey": f"user-{i}"})).json()
        assert a == b and a["reason"] == "TARGETING_MATCH"
        seen.add(a["variant"])
    assert seen == {"a", "b"}


async def test_missing_flag_is_404(edge):
    r = await post(edge, "nope")
    assert r.status_code == 404
    assert r.json()["errorCode"] == "FLAG_NOT_FOUND" and r.json()["key"] == "nope"


async def test_rule_failure_is_400_general(edge):
    r = await post(edge, "bad-target-flag", {"boom": True})
    assert r.status_code == 400
    assert r.json()["errorCode"] == "GENERAL" and r.json()["errorDetails"]


@pytest.mark.parametrize(("kw", "code"), [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "PARSE_ERROR"),
    ({"content": b"[1,2]", "headers": {"content-type": "application/json"}}, "PARSE_ERROR"),
    ({"content": b'{"context": {}}', "headers": {"content-type": "text/plain"}}, "PARSE_ERROR"),
    ({"content": b'{"context": [1]}', "headers": {"content-type": "application/json"}},
     "INVALID_CONTEXT"),
    ({"content": b'{"context": {"targetingKey": 7}}',
      "headers": {"content-type": "application/json"}}, "INVALID_CONTEXT"),
])
async def test_bad_requests_are_400_with_ofrep_codes(edge, kw, code):
    r = await post(edge, "bool-flag", **kw)
    assert r.status_code == 400
    assert r.json() == {"key": "bool-flag", "errorCode": code, "errorDetails": r.json()["errorDetails"]}
    assert r.json()["errorDetails"]


async def test_empty_body_and_empty_context_are_valid(edge):
    r = await post(edge, "bool-flag", content=b"")
    assert r.status_code == 200 and r.json()["value"] is True
    r = await post(edge, "bool-flag", {})
    assert r.status_code == 200


async def test_context_depth_and_size_limits():
    edge = App(Settings(env=ENV, max_context_depth=3, max_context_items=10))
    deep = {"a": {"b": {"c": {"d": 1}}}}
    r = await post(edge, "bool-flag", deep)
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    wide = {f"k{i}": i for i in range(11)}
    r = await post(edge, "bool-flag", wide)
    assert r.status_code == 400 and "more than 10" in r.json()["errorDetails"]
    r = await post(edge, "bool-flag", {f"k{i}": i for i in range(10)})  # flat, at the limit
    assert r.status_code == 200
    r = await post(edge, "bool-flag", {"k": list(range(10))})  # 1 + 10 values
    assert r.status_code == 400 and "more than 10" in r.json()["errorDetails"]


async def test_body_limit_is_413():
    edge = App(Settings(env=ENV, body_limit=1024))
    r = await post(edge, "bool-flag", {"blob": "x" * 2000})
    assert r.status_code == 413 and r.json()["errorCode"] == "PAYLOAD_TOO_LARGE"


async def test_auth_errors(edge):
    r = await post(edge, "bool-flag", kind=None)
    assert r.status_code == 401 and r.json()["errorCode"] == "UNAUTHORIZED"
    async with edge.client(None) as c:
        r = await c.post(URL + "bool-flag", json={}, headers={"X-API-Key": "fe_client_wrong"})
    assert r.status_code == 401


async def test_no_rules_and_no_source_is_503(tmp_path):
    edge = App(doc=None, sources=lambda store: [FileSource(tmp_path / "missing.json", store, env=ENV)])
    r = await post(edge, "bool-flag")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert "not reachable" in r.json()["errorDetails"]


async def test_explain_needs_server_key_and_shows_path(edge):
    async with edge.client("client") as c:
        assert (await c.post("/v1/explain/string-flag", json={})).status_code == 403
    async with edge.client("server") as c:
        r = await c.post("/v1/explain/string-flag", json={"context": {"plan": "pro"}})
    assert r.status_code == 200
    body = r.json()
    assert body["result"]["variant"] == "pro" and body["env"] == ENV and body["version"] == 1
    assert isinstance(body["path"], list) and body["path"]
    async with edge.client("admin") as c:
        assert (await c.post("/v1/explain/nope", json={})).status_code == 404


async def test_openapi_documents_ofrep_superset(edge):
    async with edge.client(None) as c:
        spec = (await c.get("/openapi.json")).json()
    assert "/ofrep/v1/evaluate/flags/{key}" in spec["paths"]
    success = spec["components"]["schemas"]["evaluationSuccess"]
    assert success["properties"]["variant"]["type"] == ["string", "null"]
    assert "DEFAULT" in success["properties"]["reason"]["enum"]
    assert "value" not in success["required"]
    assert orjson.dumps(spec)  # serialisable


async def test_configuration_endpoint(edge):
    async with edge.client("client") as c:
        body = (await c.get("/ofrep/v1/configuration")).json()
    assert body["name"] == "flagedge"
    assert "float" in body["capabilities"]["flagEvaluation"]["supportedTypes"]
    async with edge.client(None) as c:
        assert (await c.get("/ofrep/v1/configuration")).status_code == 401


async def test_envs_endpoint_scopes_by_kind(edge):
    from tests.unit.ofrep_app import publish

    publish(edge.store, {"flags": {}}, 3, env="other")
    async with edge.client("server") as c:
        assert set((await c.get("/v1/envs")).json()["envs"]) == {ENV}
    async with edge.client("admin") as c:  # admin keys are bound to one environment too
        envs = (await c.get("/v1/envs")).json()["envs"]
    assert set(envs) == {ENV} and "other" not in str(envs)
    async with edge.client("client") as c:
        assert (await c.get("/v1/envs")).status_code == 403
