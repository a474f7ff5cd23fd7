"""Experiments end to end (DESIGN §11): simulated users with fixed seeds evaluated over OFREP
and converting through ``POST /v1/track`` with known true rates; ``flagedge insights
experiment --json`` reads exactly the assignments served (only the users the split assigned:
internal users routed to a variant before the split never count) and the conversions sent,
finds the uplift, and a rule change starts a new revision that does not mix with the old."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {"FLAGEDGE_INSIGHTS_FLUSH": "0.2", "FLAGEDGE_TRACK_RATE": "0"}
RATES = {"control": 0.10, "treatment": 0.15}  # a 50 % uplift: power ~100 % at 10,000 per arm


def doc(weights: tuple[int, int] = (50, 50)) -> dict[str, Any]:
    return {"flags": {"checkout": {
        "state": "ENABLED", "defaultVariant": "control",
        "variants": {"control": "one-page", "treatment": "two-step"},
        "metadata": {"kind": "experiment", "control": "control"},
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@internal.test"]}, "treatment",
                             {"fractional": [["control", weights[0]],
                                             ["treatment", weights[1]]]}]}}}}


def experiment(redis_url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "proxy", "insights", "experiment", "checkout",
                          "--event", "purchase", "--env", "test", "--redis", redis_url,
                          "--json"], capture_output=True, check=True)
    return orjson.loads(out.stdout)


def serve_users(proxy: Any, key: str, users: list[dict[str, str]]) -> dict[str, str]:
    """Each user's variant, over the OFREP single-flag endpoint."""
    seen = {}
    with proxy.client(key) as c:
        for ctx in users:
            r = c.post("/ofrep/v1/evaluate/flags/checkout", json={"context": ctx})
            seen[ctx["targetingKey"]] = r.json()["variant"]
    return seen


def track(proxy: Any, key: str, events: list[dict[str, Any]]) -> None:
    with proxy.client(key) as c:
        for i in range(0, len(events), 100):
            r = c.post("/v1/track", json={"events": events[i:i + 100]})
            assert r.status_code == 202 and r.json()["accepted"] == len(events[i:i + 100])


def by_variant(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["variant"]: v for v in report["variants"]}


def test_a_simulated_experiment_is_read_back_exactly_and_its_uplift_found(proxy_factory,
                                                                          redis_server):
    proxy = proxy_factory(environ=FAST)
    proxy.push(doc())
    key = proxy.create_key("client")
    rng = random.Random(20261206)
    users = [{"targetingKey": f"u{i}", "email": f"u{i}@mail.test"} for i in range(20_000)]
    internal = [{"targetingKey": f"staff{i}", "email": f"s{i}@internal.test"} for i in range(300)]
    variants = serve_users(proxy, key, users + internal)
    assert {variants[u["targetingKey"]] for u in internal} == {"treatment"}
    converted = [tk for tk, v in variants.items() if tk.startswith("u") and rng.random() < RATES[v]]
    events = [{"event": "purchase", "targetingKey": tk, "value": 20.0} for tk in converted]
    events += [{"event": "purchase", "context": {"targetingKey": u["targetingKey"]}}
               for u in internal]  # routed before the split: never attributed
    events += [{"event": "purchase", "targetingKey": converted[0], "value": 5.0}]  # twice
    track(proxy, key, events)
    want_assigned = {v: sum(1 for u in users if variants[u["targetingKey"]] == v)
                     for v in RATES}
    want_converted = {v: sum(1 for tk in converted if variants[tk] == v) for v in RATES}

    def arrived() -> bool:
        arms = by_variant(experiment(redis_server.url))
        return ({v: arms[v]["assigned"] for v in RATES} == want_assigned
                and {v: arms[v]["converted"] for v in RATES} == want_converted)

    wait_until(arrived, timeout=30, what="assignments and conversions flushed and attributed")
    report = experiment(redis_server.url)
    arms = by_variant(report)
    for v, rate in RATES.items():
        assert arms[v]["ci"][0] <= rate <= arms[v]["ci"][1]
    treatment = arms["treatment"]
    assert treatment["p_value"] < 0.001 and treatment["diff_ci"][0] > 0
    assert treatment["diff_ci"][0] <= 0.05 <= treatment["diff_ci"][1]
    assert report["srm"]["warning"] is None and report["control"] == "control"
    # A rule change starts a new revision: the old one's users and conversions stay apart.
    proxy.push(doc((80, 20)))
    proxy.wait_version(2)
    later = serve_users(proxy, key, [{"targetingKey": f"n{i}"} for i in range(1_000)])

    def new_revision() -> bool:
        now = experiment(redis_server.url)
        return (now["revision"] != report["revision"]
                and sum(a["assigned"] for a in now["variants"]) == len(later))

    wait_until(new_revision, timeout=20, what="the new revision's assignments")
    assert sum(a["converted"] for a in experiment(redis_server.url)["variants"]) == 0
