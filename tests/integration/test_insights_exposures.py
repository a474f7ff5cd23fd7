"""Insights exposures (DESIGN §11) across replicas and workers: two `flagedge serve`
processes with two workers each, a known mix of requests (bulk, single, 304s, an evaluated stream,
a provider's reported exposures), and the counts that `flagedge insights flags --json` reads back from
Redis equal what was served, exactly; unique users within HyperLogLog error; Redis down
during traffic slows and fails nothing, and the counts arrive after it returns."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.integration

BULK = "/ofrep/v1/evaluate/flags"
DOC = {"flags": {
    "banner": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
               "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}},
    "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
              "defaultVariant": "red"},
    "old": {"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"},
}}
FAST = {"FLAGEDGE_INSIGHTS_FLUSH": "0.2"}


def insights(redis_url: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "proxy", "insights", *args, "--env", "test",
                          "--redis", redis_url, "--json"], capture_output=True, check=True)
    return orjson.loads(out.stdout)


def counted(report: dict[str, Any]) -> Counter:
    return Counter({(row["flag"], v["variant"], reason): n
                    for row in report["flags"] for v in row["variants"]
                    for reason, n in v["by_reason"].items()})


def test_counts_summed_over_replicas_and_workers_equal_what_was_served(proxy_factory,
                                                                       redis_server):
    a = proxy_factory(extra_args=["--workers", "2"], environ=FAST)
    b = proxy_factory(extra_args=["--workers", "2"], environ=FAST)
    a.push(DOC)
    b.wait_version(1)
    client_key, server_key = a.create_key("client"), a.create_key("server")
    # create_key's own probes (a bulk request each) are flushed on a worker's next tick:
    # read them once they are all in, not while the second is on its way
    settle(redis_server.url)
    baseline = counted(insights(redis_server.url, "flags"))
    served: Counter = Counter()
    users = set()
    for i in range(120):
        proxy = (a, b)[i % 2]
        plan = "pro" if i % 3 == 0 else "free"
        ctx = {"targetingKey": f"user-{i % 40}", "plan": plan}
        users.add(ctx["targetingKey"])
        with proxy.client(client_key) as c:
            r = c.post(BULK, json={"context": ctx})
            assert r.status_code == 200
            served.update((f["key"], f.get("variant"), f["reason"]) for f in r.json()["flags"])
            if i % 4 == 0:  # a 304 confirms the same results: counted again
                again = c.post(BULK, json={"context": ctx},
                               headers={"If-None-Match": r.headers["etag"]})
                assert again.status_code == 304
                served.update((f["key"], f.get("variant"), f["reason"])
                              for f in r.json()["flags"])
            if i % 5 == 0:
                one = c.post(f"{BULK}/color", json={"context": ctx}).json()
                served[("color", one["variant"], one["reason"])] += 1
    with b.client(server_key) as c:  # a provider's in-process evaluations
        r = c.post("/v1/exposures", json={"exposures": [
            {"flag": "banner", "variant": "on", "reason": "TARGETING_MATCH", "count": 7},
            {"flag": "deleted-meanwhile", "variant": "x", "reason": "STATIC", "count": 2}]})
        assert r.status_code == 202 and r.json() == {"accepted": 7, "ignored": 2}
    served[("banner", "on", "TARGETING_MATCH")] += 7
    served += evaluated_stream_exposures(a, client_key)
    expected = baseline + Counter({(k, v or None, reason): n for (k, v, reason), n in served.items()})

    def arrived() -> bool:
        return counted(insights(redis_server.url, "flags")) == expected

    wait_until(arrived, timeout=15, what="every exposure flushed to Redis")
    report = insights(redis_server.url, "flags")
    assert abs(report["unique_users"] - len(users)) <= max(1, len(users) // 50)
    assert {row["flag"] for row in report["flags"]} == {"banner", "color", "old"}
    assert all(row["last_evaluated"] for row in report["flags"])


def settle(redis_url: str) -> None:
    """Wait until what was served is all flushed: three reads alike (each read is a CLI run,
    longer than the tests' flush period) and not empty."""
    reads: list = []

    def settled() -> bool:
        reads.append(counted(insights(redis_url, "flags")))
        return len(reads) >= 3 and reads[-1] == reads[-2] == reads[-3] and bool(reads[-1])

    wait_until(settled, timeout=15, what="the exposures served so far flushed")


def sse_events(lines: Any) -> Any:
    """(event, data) of each SSE frame from an iterator of lines."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, orjson.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


def evaluated_stream_exposures(proxy: Any, key: str) -> Counter:
    """An evaluated stream's put (every flag) and, after a push, its patch (the flag that
    changed for this user): what it delivered, as (flag, variant, reason) counts."""
    import base64

    ctx = base64.urlsafe_b64encode(orjson.dumps({"targetingKey": "s1", "plan": "pro"}))
    got: Counter = Counter()
    with proxy.client(key) as c, c.stream("GET", "/v1/stream/evaluated",
                                         params={"context": ctx.decode().rstrip("=")}) as s:
        frames = sse_events(s.iter_lines())
        event, data = next(frames)
        assert event == "put"
        got.update((f["key"], f.get("variant"), f["reason"]) for f in data["flags"])
        changed = {"flags": {**DOC["flags"], "color": {**DOC["flags"]["color"],
                                                        "defaultVariant": "blue"}}}
        proxy.push(changed)
        event, data = next(f for f in frames if f[0] == "patch")
        assert [f["key"] for f in data["flags"]] == ["color"]
        got.update((f["key"], f.get("variant"), f["reason"]) for f in data["flags"])
    return got


def test_redis_down_during_traffic_fails_nothing_and_the_counts_arrive_later(proxy_factory,
                                                                               redis_server):
    proxy = proxy_factory(environ=FAST)
    proxy.push(DOC)
    key = proxy.create_key("client")
    baseline = counted(insights(redis_server.url, "flags"))
    redis_server.kill()
    with proxy.client(key) as c:
        for i in range(50):
            r = c.post(BULK, json={"context": {"targetingKey": f"u{i}", "plan": "pro"}})
            assert r.status_code == 200  # the last good rules, from memory
    wait_until(lambda: flushes(proxy, "failed") >= 1, timeout=10, what="a flush failing")
    redis_server.start()
    expected = baseline + Counter({("banner", "on", "TARGETING_MATCH"): 50,
                                   ("color", "red", "STATIC"): 50,
                                   ("old", None, "DISABLED"): 50})
    wait_until(lambda: counted(insights(redis_server.url, "flags")) == expected, timeout=20,
               what="the held counts flushed after Redis returned")
    assert insights(redis_server.url, "flags")["unique_users"] >= 48
    assert flushes(proxy, "ok") >= 1


def flushes(proxy: Any, outcome: str) -> float:
    with proxy.client(None) as c:
        metrics = c.get("/metrics").text
    pattern = r'^flagedge_insights_flushes_total\{outcome="' + outcome + r'"\} (\S+)$'
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_stale_flags_and_partly_unknown_usage(proxy_factory, redis_server):
    proxy = proxy_factory(environ=FAST)
    proxy.push(DOC)
    key = proxy.create_key("client")
    with proxy.client(key) as c:
        c.post(BULK, json={"context": {"targetingKey": "u1", "plan": "free"}})
        c.post(f"{BULK}/banner", json={"context": {"targetingKey": "u2", "plan": "pro"}})
    wait_until(lambda: insights(redis_server.url, "flags")["flags"][0]["last_evaluated"],
               timeout=10, what="a flush")
    # Every flag was first served within the window: too young to call stale.
    assert insights(redis_server.url, "stale", "--unused", "30d")["flags"] == []
    # Pretend they were born long ago (what a 30-day-old deployment holds).
    r = redis_server_client(redis_server)
    for flag in DOC["flags"]:
        r.hset("flagedge:{test}:born", flag, 1)
    stale = {row["flag"]: row["reason"]
             for row in insights(redis_server.url, "stale", "--unused", "30d")["flags"]}
    # color served only "red", old only as DISABLED; banner served both: active.
    assert set(stale) == {"color", "old"}
    assert "only 'red'" in stale["color"]
    # A rules-stream consumer that reports nothing makes usage partly unknown.
    server_key = proxy.create_key("server")
    with proxy.client(server_key) as c, c.stream("GET", "/v1/stream/rules") as s:
        next(s.iter_lines())
        wait_until(lambda: insights(redis_server.url, "flags")["usage"] == "partly unknown",
                   timeout=10, what="the consumer noted")
    with proxy.client(server_key) as c:
        c.post("/v1/exposures", json=[{"flag": "color", "variant": "red", "reason": "STATIC"}])
    wait_until(lambda: insights(redis_server.url, "flags")["usage"] == "complete",
               timeout=10, what="the consumer reporting")


def redis_server_client(server) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


def test_a_flagd_sync_consumer_makes_usage_partly_unknown(proxy_factory, redis_server):
    import grpc

    from proxy.sync import sync_pb2, sync_pb2_grpc
    from tests.integration.sync.conftest import start_sync_server

    sync = start_sync_server(proxy_factory, DOC, extra_args=[])
    sync.proxy.stop()  # restarted with a fast flush (start_sync_server takes no environ)
    sync.proxy.environ.update(FAST)
    sync.proxy.start()
    assert insights(redis_server.url, "flags")["usage"] == "complete"
    with grpc.insecure_channel(sync.target) as channel:
        stub = sync_pb2_grpc.FlagSyncServiceStub(channel)
        stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(provider_id=sync.key), timeout=5)
    wait_until(lambda: insights(redis_server.url, "flags")["usage"] == "partly unknown",
               timeout=10, what="the sync consumer noted")


def test_in_process_evaluations_are_reported_by_the_provider(proxy_factory, redis_server):
    """FlagedgeProvider counts what it evaluates through its hook and reports it to
    /v1/exposures; its key consumed rules and reported, so usage stays complete."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from proxy.provider import FlagedgeProvider

    proxy = proxy_factory(environ=FAST)
    proxy.push(DOC)
    key = proxy.create_key("server")
    baseline = counted(insights(redis_server.url, "flags"))
    provider = FlagedgeProvider(proxy.url, key, report_exposures=0.2)
    try:
        api.set_provider_and_wait(provider, domain="insights-provider")
        client = api.get_client("insights-provider")
        for i in range(30):
            plan = "pro" if i < 10 else "free"
            client.get_boolean_value("banner", False, EvaluationContext(f"u{i}", {"plan": plan}))
        client.get_string_value("color", "x")
        wait_until(lambda: counted(insights(redis_server.url, "flags")) - baseline == Counter({
            ("banner", "on", "TARGETING_MATCH"): 10, ("banner", "off", "TARGETING_MATCH"): 20,
            ("color", "red", "STATIC"): 1}), timeout=15, what="the provider's report")
        assert insights(redis_server.url, "flags")["usage"] == "complete"
    finally:
        api.shutdown()


def test_track_from_a_flooding_address_is_throttled_while_others_are_served(proxy_factory):
    proxy = proxy_factory(environ={"FLAGEDGE_TRACK_RATE": "2"},
                          extra_args=["--trusted-proxies", "127.0.0.1"])
    proxy.push(DOC)
    key = proxy.create_key("client")
    event = {"events": [{"event": "e", "targetingKey": "u"}]}
    with proxy.client(key) as c:
        flood = [c.post("/v1/track", json=event, headers={"X-Forwarded-For": "203.0.113.9"})
                 for _ in range(20)]
        other = c.post("/v1/track", json=event, headers={"X-Forwarded-For": "198.51.100.7"})
    codes = [r.status_code for r in flood]
    assert codes[:8] == [202] * 8 and 429 in codes  # a burst of 4x the rate, then refused
    assert int(next(r for r in flood if r.status_code == 429).headers["Retry-After"]) >= 1
    assert other.status_code == 202


def test_the_admin_api_reads_the_same_insights_with_a_viewing_role(proxy_factory, redis_server):
    proxy = proxy_factory(environ=FAST)
    proxy.push(DOC)
    client_key = proxy.create_key("client")
    with proxy.client(client_key) as c:
        c.post(BULK, json={"context": {"targetingKey": "u1", "plan": "pro"}})
    wait_until(lambda: insights(redis_server.url, "flags")["flags"][0]["last_evaluated"],
               timeout=10, what="a flush")
    viewer = subprocess.run([sys.executable, "-m", "proxy", "keys", "create", "--env", "test",
                             "--kind", "admin", "--name", "pm", "--roles", "view",
                             "--redis", redis_server.url, "--json"],
                            capture_output=True, check=True)
    admin = orjson.loads(viewer.stdout)["key"]
    wait_until(lambda: proxy.key_works(admin), timeout=10, what="the new key known")
    settle(redis_server.url)  # key_works evaluates too: its counts must not land in between
    with proxy.client(admin) as c:
        flags = c.get("/v1/admin/insights/flags", params={"since": "1h"})
        assert flags.status_code == 200, flags.text
        cli = insights(redis_server.url, "flags", "--since", "1h")
        assert counted(flags.json()) == counted(cli) and flags.json()["usage"] == cli["usage"]
        assert c.get("/v1/admin/insights/stale").status_code == 200
        bad = c.get("/v1/admin/insights/flags", params={"since": "forever"})
        assert bad.status_code == 400 and "since" in bad.json()["errorDetails"]
        not_exp = c.get("/v1/admin/insights/experiments/banner", params={"event": "buy"})
        assert not_exp.status_code == 404 and "not an experiment" in not_exp.json()["errorDetails"]
    with proxy.client(client_key) as c:  # a client key reads no insights
        assert c.get("/v1/admin/insights/flags").status_code in (401, 403)


def test_live_per_minute_counts_stream_to_the_ui(proxy_factory, redis_server):
    proxy = proxy_factory(environ=FAST)
    proxy.push(DOC)
    client_key = proxy.create_key("client")
    out = subprocess.run([sys.executable, "-m", "proxy", "keys", "create", "--env", "test",
                          "--kind", "admin", "--name", "ui", "--roles", "view",
                          "--redis", redis_server.url, "--json"], capture_output=True, check=True)
    admin = orjson.loads(out.stdout)["key"]
    wait_until(lambda: proxy.key_works(admin), timeout=10, what="the new key known")
    settle(redis_server.url)  # so the stream's put holds all the probes counted

    def red(minutes: dict) -> int:
        return sum(per_flag.get("color", {}).get("red", 0) for per_flag in minutes.values())

    with proxy.client(admin) as c, \
            c.stream("GET", "/v1/admin/insights/live", params={"minutes": "5"}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        frames = sse_events(s.iter_lines())
        event, put = next(frames)
        assert event == "put" and len(put["minutes"]) == 5
        shown = dict(put["minutes"])
        with proxy.client(client_key) as http:
            for i in range(3):
                http.post(f"{BULK}/color", json={"context": {"targetingKey": f"l{i}"}})
        for event, data in frames:  # the stream's own minutes, updated as they come
            assert event == "minute"
            shown.update(data["minutes"])
            if red(shown) >= red(put["minutes"]) + 3:
                break
        assert red(shown) == red(put["minutes"]) + 3
