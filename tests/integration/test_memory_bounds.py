"""Memory bounds under adversarial contexts (issue 20), on a real `flagedge serve` and Redis:
many large unique contexts (each cached, each aliased, each with a body of its own) and
60 KB "versions" for sem_ver. The cache bytes gauges stay under the configured budgets, and
the worker's RSS grows by a bounded amount, not by what the requests carried."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests import bench_module

pytestmark = pytest.mark.integration

MB = 1024 * 1024
BUDGET = 2 * MB  # cache_bytes and bodies_bytes alike
UNIQUE = 600  # contexts of ~4 KB: ~600 x 45 KB of bodies if nothing bounded them
PAD = "p" * 3600


def gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^flagedge_cache_bytes\{cache="([^"]+)"\} (\S+)$', text, re.M)}


def context(i: int) -> dict[str, Any]:
    return {"targetingKey": f"adv-{i}", "plan": "pro", "country": "DE", "age": 30,
            "email": f"adv{i}@example.com", "appVersion": "2.1.0", "note": PAD}


def test_cache_bytes_stay_under_budget_with_large_unique_contexts(proxy_factory):
    server = proxy_factory(environ={"FLAGEDGE_CACHE_BYTES": str(BUDGET),
                                    "FLAGEDGE_BODIES_BYTES": str(BUDGET)})
    memory = bench_module.load("memory")
    server.push(memory.flag_document(150))  # bodies of ~22 KB
    key = server.create_key("client")
    worker = psutil.Process(server.proc.pid)
    with server.client(key) as client:
        for i in range(20):  # warm: every flag's results serialised, every route hit once
            assert client.post("/ofrep/v1/evaluate/flags", json={"context": context(-i)}
                               ).status_code == 200
        baseline = worker.memory_info().rss
        for i in range(UNIQUE):
            ctx = context(i)
            r = client.post("/ofrep/v1/evaluate/flags", json={"context": ctx})
            assert r.status_code == 200, r.text
            # The same context, keys reversed: a canonical hit that becomes a raw alias.
            again = orjson.dumps({"context": dict(reversed(ctx.items()))})
            r = client.post("/ofrep/v1/evaluate/flags", content=again,
                            headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            if i % 4 == 0:  # ~60 KB "versions" for every sem_ver flag, bulk and single
                long = {"targetingKey": f"big-{i}", "appVersion": f"{i}" + "7" * 60_000}
                assert client.post("/ofrep/v1/evaluate/flags", json={"context": long}
                                   ).status_code == 200
                assert client.post(f"/ofrep/v1/evaluate/flags/{memory.SEMVER_FLAG}",
                                   json={"context": long}).status_code == 200
        grown = worker.memory_info().rss - baseline
    # What the requests carried: ~600 x (22 KB body + 4 KB context + 8 KB alias) and 150
    # 60 KB versions, ~29 MB; unbounded it all stays. Bounded: the budgets, the pending
    # exposures' bodies (8 MB at most) and the allocator's slack.
    assert grown < 20 * MB, f"RSS grew by {grown / MB:.1f} MB"
    held = gauges(server.url)
    assert BUDGET / 2 < held["results"] <= BUDGET, held  # filled, and bounded
    assert BUDGET / 2 < held["bulk_bodies"] <= BUDGET, held
    assert held["semver"] < MB, held  # 60 KB strings are never cached
