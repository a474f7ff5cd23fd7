"""POST /ofrep/v1/evaluate/flags: bulk body, ETag/304, result cache, eventStreams, catch-up."""

from __future__ import annotations

import asyncio
import copy
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from proxy.config import Settings
from tests.unit.ofrep_app import DOC, ENV, App, publish
from tests.waiting import until

URL = "/ofrep/v1/evaluate/flags"


@pytest.fixture
def edge() -> App:
    return App()


async def bulk(app: App, context=None, kind="client", headers=None, params=None):
    async with app.client(kind) as c:
        return await c.post(URL, json={"context": context or {}}, headers=headers or {},
                            params=params)


async def test_bulk_shape_every_flag_inline_errors_and_event_streams(edge):
    r = await bulk(edge, {"targetingKey": "u1", "boom": True})
    assert r.status_code == 200
    body = r.json()
    items = {f["key"]: f for f in body["flags"]}
    assert set(items) == set(DOC["flags"])
    assert [f["key"] for f in body["flags"]] == sorted(items)  # canonical order
    assert items["bad-target-flag"]["errorCode"] == "GENERAL"
    assert "value" not in items["bad-target-flag"]
    assert items["disabled-flag"]["variant"] is None and "value" not in items["disabled-flag"]
    assert items["float-flag"]["value"] == 1.0 and b'"value":1.0' in r.content
    assert body["metadata"] == {"flagSetId": "unit"}
    (stream,) = body["eventStreams"]
    assert stream["type"] == "sse" and stream["inactivityDelaySec"] == 120
    uri = urlsplit(stream["endpoint"]["requestUri"])
    assert uri.path == "/ofrep/v1/events"
    token = parse_qs(uri.query)["token"][0]
    grant = edge.runtime.tokens.verify(token)
    assert grant is not None and grant.env == ENV and grant.kind == "client"
    assert edge.keys["client"] not in r.text  # never the API key itself
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')


async def test_etag_304_and_cache_hits(edge):
    ctx = {"targetingKey": "u1", "plan": "pro"}
    first = await bulk(edge, ctx)
    etag = first.headers["etag"]
    assert edge.runtime.cache.misses == 1
    again = await bulk(edge, dict(reversed(list(ctx.items()))))  # same context, other key order
    assert again.headers["etag"] == etag and again.content == first.content
    assert edge.runtime.cache.hits == 1
    nm = await bulk(edge, ctx, headers={"If-None-Match": etag})
    assert nm.status_code == 304 and nm.content == b"" and nm.headers["etag"] == etag
    nm = await bulk(edge, ctx, headers={"If-None-Match": f'"other", W/{etag}'})
    assert nm.status_code == 304
    other = await bulk(edge, {"targetingKey": "u1", "plan": "free"})
    assert other.headers["etag"] != etag


async def test_a_repeated_raw_body_is_answered_from_its_alias_without_parsing(edge, monkeypatch):
    body = b'{"context": {"targetingKey": "u1", "plan": "pro"}}'
    json_ct = {"Content-Type": "application/json"}
    async with edge.client("client") as c:
        first = await c.post(URL, content=body, headers=json_ct)
        assert (edge.runtime.cache.hits, edge.runtime.cache.misses) == (0, 1)
        second = await c.post(URL, content=body, headers=json_ct)  # seen twice: aliased now
        assert second.content == first.content and edge.runtime.cache.hits == 1
        from proxy.api import ofrep

        def no_parse(*_args):
            raise AssertionError("a raw-body hit must not parse the body")

        monkeypatch.setattr(ofrep, "parse_request", no_parse)
        again = await c.post(URL, content=body, headers=json_ct)
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        assert edge.runtime.cache.hits == 2
        monkeypatch.undo()
        # The content type is part of the alias key: the same bytes as text/plain are still a 400.
        plain = await c.post(URL, content=body, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 400 and plain.json()["errorCode"] == "PARSE_ERROR"
        # A new rules version never answers from an old alias.
        doc = copy.deepcopy(DOC)
        doc["flags"]["string-flag"]["variants"]["pro"] = "Hi pro"
        publish(edge.store, doc, 2)
        changed = await c.post(URL, content=body, headers=json_ct)
    assert changed.headers["etag"] != first.headers["etag"]
    assert {f["key"]: f for f in changed.json()["flags"]}["string-flag"]["value"] == "Hi pro"


async def test_etag_follows_results_not_versions(edge):
    ctx = {"targetingKey": "u1", "plan": "pro"}
    etag = (await bulk(edge, ctx)).headers["etag"]
    # A new version that changes nothing this context sees: same ETag (another replica,
    # or a push of an unrelated change, must not invalidate clients).
    publish(edge.store, copy.deepcopy(DOC), 2)
    same = await bulk(edge, ctx, headers={"If-None-Match": etag})
    assert same.status_code == 304
    doc = copy.deepcopy(DOC)
    doc["flags"]["string-flag"]["variants"]["pro"] = "Hi pro"
    publish(edge.store, doc, 3)
    changed = await bulk(edge, ctx, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert {f["key"]: f for f in changed.json()["flags"]}["string-flag"]["value"] == "Hi pro"
    # A change that does not touch this context's results keeps its ETag.
    etag3 = changed.headers["etag"]
    doc["flags"]["string-flag"]["variants"]["basic"] = "Hello there"
    publish(edge.store, doc, 4)
    assert (await bulk(edge, ctx, headers={"If-None-Match": etag3})).status_code == 304


async def test_etag_includes_stream_token_window(edge):
    ctx = {"targetingKey": "u9"}
    etag = (await bulk(edge, ctx)).headers["etag"]
    window = edge.runtime.tokens.window()
    assert etag.endswith(f'-{window}"')


async def test_timestamp_rules_bypass_the_cache():
    """A read of the clock other than a comparison with a literal time: any second may change
    a result, so nothing is cached."""
    doc = {"flags": {"timed": {"state": "ENABLED", "variants": {"on": True, "off": False},
                               "defaultVariant": "off", "targeting": {
                                   "if": [{">": [{"var": "$flagd.timestamp"}, {"var": "since"}]},
                                          "on", "off"]}}}}
    edge = App(doc=doc)
    for _ in range(3):
        r = await bulk(edge, {"targetingKey": "a", "since": 0})
        assert r.json()["flags"][0]["value"] is True
    assert edge.runtime.cache.hits == 0 and edge.runtime.cache.bypassed == 3


def _stepped(at: int) -> dict:
    return {"flags": {"timed": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                "defaultVariant": "off", "targeting": {
                                    "if": [{"<": [{"var": "$flagd.timestamp"}, at]},
                                           "on", "off"]}}}}


async def test_literal_time_thresholds_are_cached_within_their_interval():
    """Entries are keyed on the interval: hits before the boundary, and after it the next
    interval's result (a cached 'on' served on would never let 'off' through) with a new
    ETag, without any write."""
    boundary = int(time.time()) + 2
    edge = App(doc=_stepped(boundary))
    before = [await bulk(edge, {"targetingKey": "a"}) for _ in range(3)]
    if time.time() < boundary:  # (a loaded machine may have crossed it already)
        assert [r.json()["flags"][0]["value"] for r in before] == [True, True, True]
        assert edge.runtime.cache.hits >= 1 and edge.runtime.cache.bypassed == 0

    async def flipped():
        r = await bulk(edge, {"targetingKey": "a"})
        return r if r.json()["flags"][0]["value"] is False else None

    after = await until(flipped, timeout=6, what="the result after the boundary")
    assert time.time() >= boundary
    assert after.headers["etag"] != before[0].headers["etag"]
    assert edge.store.get(ENV).version == 1  # no write made it change
    hits = edge.runtime.cache.hits
    again = await bulk(edge, {"targetingKey": "a"})
    assert again.json()["flags"][0]["value"] is False and edge.runtime.cache.hits == hits + 1


async def test_an_entry_evaluated_across_a_boundary_is_not_kept(monkeypatch):
    """The interval is read before and after evaluating: results that may be the next
    interval's are not stored under the previous one."""
    import proxy.api.ofrep as ofrep

    edge = App(doc=_stepped(2_000_000_000))
    clock = iter([1_999_999_999.9, 2_000_000_000.1] * 10)
    monkeypatch.setattr(ofrep, "time", type("Clock", (), {"time": staticmethod(lambda: next(clock))}))
    for _ in range(3):
        await bulk(edge, {"targetingKey": "a"})
    assert len(edge.runtime.cache) == 0 and edge.runtime.cache.hits == 0


async def test_invalid_context_is_400_bulk_failure(edge):
    async with edge.client() as c:
        r = await c.post(URL, json={"context": {"targetingKey": 12}})
    assert r.status_code == 400
    assert r.json()["errorCode"] == "INVALID_CONTEXT" and "key" not in r.json()


async def test_flag_config_etag_waits_for_the_store(edge):
    async def later():
        await asyncio.sleep(0.05)
        doc = copy.deepcopy(DOC)
        doc["flags"]["bool-flag"]["defaultVariant"] = "off"
        publish(edge.store, doc, 2)

    task = asyncio.create_task(later())
    r = await bulk(edge, {}, params={"flagConfigEtag": "2"})
    await task
    assert {f["key"]: f for f in r.json()["flags"]}["bool-flag"]["value"] is False
    # Asking for a version that never comes answers after the bounded wait, with what we have.
    loop = asyncio.get_running_loop()
    start = loop.time()
    r = await bulk(edge, {}, params={"flagConfigEtag": '"99"'})
    assert r.status_code == 200 and 0.4 <= loop.time() - start < 2.0


async def test_a_boundary_notification_etag_does_not_wait(edge):
    """A refetchEvaluation sent at a time boundary names the current state and interval
    (``VERSION-TAG~I``): that state is served already, so the re-fetch answers at once."""
    etag = edge.store.get(ENV).state_id + "~3"
    loop = asyncio.get_running_loop()
    start = loop.time()
    r = await bulk(edge, {}, params={"flagConfigEtag": etag})
    assert r.status_code == 200 and loop.time() - start < 0.3


async def test_environment_binding(edge):
    publish(edge.store, {"flags": {"other-only": {"state": "ENABLED", "variants": {"x": 1},
                                                  "defaultVariant": "x"}}}, 1, env="other")
    keys = {f["key"] for f in (await bulk(edge, {})).json()["flags"]}
    assert "other-only" not in keys and "bool-flag" in keys


async def test_rate_limit_429_retry_after():
    edge = App(rate_limit=1.0)
    assert (await bulk(edge, {})).status_code == 200
    r = await bulk(edge, {})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["errorCode"] == "RATE_LIMITED"


async def test_cors_preflight_and_exposed_etag():
    edge = App(Settings(env=ENV, cors_origins=("https://app.example",)))
    async with edge.client(None) as c:
        pre = await c.options(URL, headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, if-none-match"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        allowed = pre.headers["access-control-allow-headers"].lower()
        for h in ("authorization", "x-api-key", "if-none-match", "last-event-id", "content-type"):
            assert h in allowed
        assert int(pre.headers["access-control-max-age"]) > 0
        bad = await c.options(URL, headers={"Origin": "https://evil.example",
                                            "Access-Control-Request-Method": "POST"})
        assert bad.status_code == 400
    async with edge.client("client") as c:
        r = await c.post(URL, json={}, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-expose-headers"] == "ETag"


async def test_metrics_count_exposures_requests_and_cache(edge):
    await bulk(edge, {"targetingKey": "u1"})
    etag = (await bulk(edge, {"targetingKey": "u1"})).headers["etag"]
    # A 304 counts the results it confirms: the client shows them (DESIGN §11).
    await bulk(edge, {"targetingKey": "u1"}, headers={"If-None-Match": etag})
    async with edge.client(None) as c:
        text = (await c.get("/metrics")).text
    assert 'flagedge_evaluations_total{env="test",flag="bool-flag",reason="STATIC",variant="on"} 3.0' in text
    assert 'flagedge_http_requests_total{route="/ofrep/v1/evaluate/flags",status="200"} 2.0' in text
    assert 'flagedge_http_requests_total{route="/ofrep/v1/evaluate/flags",status="304"} 1.0' in text
    assert 'flagedge_result_cache_lookups_total{outcome="hit"} 2.0' in text
    assert "flagedge_result_cache_hit_ratio" in text
    assert 'flagedge_ruleset_version{env="test"} 1.0' in text
    assert "flagedge_http_request_duration_seconds_bucket" in text
    assert "flagedge_change_propagation_seconds_count 1.0" in text


async def test_health_endpoints(edge):
    async with edge.client(None) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["envs"] == {ENV: 1}
    edge.store.set_status("*", connected=False, degraded_reason="redis unreachable")
    async with edge.client(None) as c:
        ready = await c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert "redis unreachable" in ready.json()["reason"]


async def test_absurdly_deep_context_is_400_not_500(edge):
    deep: dict = {}
    node = deep
    for _ in range(400):
        node["a"] = {}
        node = node["a"]
    async with edge.client() as c:
        r = await c.post(URL, json={"context": deep})
        single = await c.post(URL + "/bool-flag", json={"context": deep})
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    assert single.status_code == 400 and single.json()["errorCode"] == "INVALID_CONTEXT"


async def test_no_auth_mode_serves_the_configured_env_without_tokens():
    edge = App(Settings(env=ENV, no_auth=True))
    async with edge.client(None) as c:
        r = await c.post(URL, json={})
    assert r.status_code == 200
    assert r.json()["eventStreams"][0]["endpoint"]["requestUri"] == "/ofrep/v1/events"
    assert "-" not in r.headers["etag"]  # no token, so no window in the ETag


async def test_worker_snapshots_are_summed(tmp_path):
    from proxy.api.metrics import Metrics
    from proxy.store import Store

    other = Metrics(Store())
    other.hot.observe_request("/x", 200, 0.001)
    other.hot.count_exposures("e", (("f", "on", "STATIC"),))
    snap = other.hot.snapshot()
    (tmp_path / "worker-999999.json").write_bytes(__import__("orjson").dumps(snap))
    from proxy.model import Change, FlagSet

    store = Store()  # exposures of flags the store does not serve are pruned at scrape time
    store.publish("e", FlagSet(flags={"f": None}, version=1, epoch="x"),  # type: ignore[dict-item]
                  Change(env="e", version=1, reset=True))
    mine = Metrics(store, tmp_path)
    mine.hot.observe_request("/x", 200, 0.002)
    mine.hot.count_exposures("e", (("f", "on", "STATIC"),))
    from prometheus_client.exposition import generate_latest

    text = generate_latest(mine.registry).decode()
    assert 'flagedge_http_requests_total{route="/x",status="200"} 2.0' in text
    assert 'flagedge_evaluations_total{env="e",flag="f",reason="STATIC",variant="on"} 2.0' in text
    assert 'flagedge_http_request_duration_seconds_count{route="/x"} 2.0' in text


async def test_attributes_no_rule_reads_do_not_make_a_context_new(edge):
    """The cache is keyed on what the rules read (plan, boom, targetingKey here): a request id
    or a timestamp in every context still hits, answers the same body and ETag, and a
    context over the limits is refused even when its read part was cached."""
    first = await bulk(edge, {"targetingKey": "u1", "plan": "pro", "requestId": "r-1"})
    assert (edge.runtime.cache.hits, edge.runtime.cache.misses) == (0, 1)
    for n in range(2, 5):
        again = await bulk(edge, {"targetingKey": "u1", "plan": "pro", "requestId": f"r-{n}",
                                  "sentAt": 1700000000 + n})
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert (edge.runtime.cache.hits, edge.runtime.cache.misses) == (3, 1)
    other = await bulk(edge, {"targetingKey": "u1", "plan": "free", "requestId": "r-9"})
    assert other.headers["etag"] != first.headers["etag"] and edge.runtime.cache.misses == 2
    deep: dict = {"x": 1}
    for _ in range(edge.settings.max_context_depth + 1):
        deep = {"x": deep}
    refused = await bulk(edge, {"targetingKey": "u1", "plan": "pro", "unread": deep})
    assert refused.status_code == 400 and refused.json()["errorCode"] == "INVALID_CONTEXT"


async def test_a_change_frees_the_previous_versions_entries_in_slices_after_it(edge):
    """The entries a change makes dead are freed by a task, a slice at a time with requests
    let in between (a synchronous drop of a full cache held the loop for 17 ms), and none
    of them is ever served: the new version's answers come from the new rules."""
    cache = edge.runtime.cache
    async with edge.client() as c:
        for i in range(300):
            await c.post(URL, json={"context": {"targetingKey": f"u{i}"}})
    held = len(cache)
    assert held >= 300
    doc = copy.deepcopy(DOC)
    doc["flags"]["bool-flag"]["defaultVariant"] = "off"
    publish(edge.store, doc, 2)
    assert len(cache) == held  # not at once, in the publish
    await until(lambda: len(cache) == 0, what="the old version's entries freed")
    r = await bulk(edge, {"targetingKey": "u1"})
    assert next(f for f in r.json()["flags"] if f["key"] == "bool-flag")["value"] is False
