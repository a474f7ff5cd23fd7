"""Per-key limits hold under a flood from one key while other keys are served: a bounded
flood (2,000 requests over a few seconds) from key A gets 429 with an integer Retry-After
once its bucket is empty, while key B's requests in the same window all succeed; the same
for stream opens against the per-key stream cap."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.hardening.conftest import BULK, env_doc
from tests.integration.streams_support import Stream, vid

pytestmark = pytest.mark.integration

RATE = 50.0  # requests/s for the flooding key (burst = rate)
FLOOD = 2_000


async def test_flood_from_one_key_is_throttled_while_another_is_served(proxy_factory) -> None:
    server = proxy_factory(env="alpha")
    server.push(env_doc("alpha"), env="alpha")
    flooder = server.create_key("client", env="alpha", rate_limit=RATE, name="flooder")
    calm = server.create_key("client", env="alpha", rate_limit=RATE, name="calm")
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as c:
        await asyncio.sleep(1.0)  # let create_key's probes' tokens refill (bucket = 1 s)
        statuses: list[int] = []
        retry_after: list[str] = []
        bodies: list[dict] = []
        done = asyncio.Event()

        async def flood(n: int) -> None:
            for _ in range(n):
                r = await c.post(BULK, json={"context": {"targetingKey": "f"}},
                                 headers={"Authorization": f"Bearer {flooder}"})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_after.append(r.headers.get("retry-after", ""))
                    if len(bodies) < 50:
                        bodies.append(orjson.loads(r.content))

        calm_results: list[tuple[int, float]] = []

        async def calm_client() -> None:
            while not done.is_set():
                start = time.monotonic()
                r = await c.post(f"{BULK}/shared", json={"context": {"plan": "pro"}},
                                 headers={"Authorization": f"Bearer {calm}"})
                calm_results.append((r.status_code, time.monotonic() - start))
                await asyncio.sleep(0.1)  # 10 requests/s: well under its own limit

        start = time.monotonic()
        calm_task = asyncio.create_task(calm_client())
        await asyncio.gather(*(flood(FLOOD // 20) for _ in range(20)))
        elapsed = time.monotonic() - start
        done.set()
        await calm_task

        ok, limited = statuses.count(200), statuses.count(429)
        print(f"\nflood: {len(statuses)} requests in {elapsed:.1f}s: {ok} x 200, {limited} x 429;"
              f" other key: {len(calm_results)} requests, all "
              f"{sorted({s for s, _ in calm_results})}, max {max(t for _, t in calm_results):.3f}s")
        assert len(statuses) == FLOOD and set(statuses) <= {200, 429}
        assert ok <= RATE + RATE * elapsed + 5, (ok, elapsed)  # burst + refill, no more
        assert limited >= FLOOD - (RATE + RATE * elapsed + 5)
        assert all(v.isdigit() and int(v) >= 1 for v in retry_after), set(retry_after)
        assert all(b["errorCode"] == "RATE_LIMITED" and b["errorDetails"] for b in bodies)
        assert len(calm_results) >= 5 and all(s == 200 for s, _ in calm_results), calm_results
        assert max(t for _, t in calm_results) < 2.0

        # The flooder is served again once it waits as told.
        await asyncio.sleep(int(retry_after[-1]))
        r = await c.post(BULK, json={}, headers={"Authorization": f"Bearer {flooder}"})
        assert r.status_code == 200


async def test_stream_open_flood_hits_the_per_key_cap_not_other_keys(proxy_factory) -> None:
    server = proxy_factory(env="alpha", environ={"FLAGEDGE_SSE_MAX_PER_KEY": "3"})
    server.push(env_doc("alpha"), env="alpha")
    flooder = server.create_key("client", env="alpha", name="stream-flooder")
    calm = server.create_key("client", env="alpha", name="calm")
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout) as c, \
            Stream(c, "/ofrep/v1/events", key=flooder), \
            Stream(c, f"/ofrep/v1/events?key={flooder}"), \
            Stream(c, "/ofrep/v1/events", key=flooder):

        async def attempt(k: str) -> tuple[int, str]:
            r = await c.get("/ofrep/v1/events", headers={"Authorization": f"Bearer {k}"})
            return r.status_code, r.headers.get("retry-after", "")

        refused = await asyncio.gather(*(attempt(flooder) for _ in range(200)))
        assert {s for s, _ in refused} == {429}
        assert all(v.isdigit() and int(v) >= 1 for _, v in refused)
        # Meanwhile another key opens its streams and they work.
        async with Stream(c, "/ofrep/v1/events", key=calm) as a, \
                Stream(c, f"/ofrep/v1/events?key={calm}") as b:
            await a.next(data_only=False)
            await b.next(data_only=False)
            doc = env_doc("alpha") | {"metadata": {"v": "2"}}
            v = await asyncio.to_thread(server.push, doc, "alpha")
            assert vid(await a.next()) == v and vid(await b.next()) == v


async def test_a_keys_rate_limit_also_holds_for_its_stream_token(proxy_factory) -> None:
    """The signed ?token= a limited key receives must not be a way around its limit."""
    server = proxy_factory(env="alpha")
    server.push(env_doc("alpha"), env="alpha")
    limited = server.create_key("client", env="alpha", rate_limit=1.0, name="limited")
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c:
        await asyncio.sleep(1.1)
        bulk = await c.post(BULK, json={}, headers={"Authorization": f"Bearer {limited}"})
        assert bulk.status_code == 200
        uri = bulk.json()["eventStreams"][0]["endpoint"]["requestUri"]
        statuses = []
        for _ in range(20):
            async with c.stream("GET", uri) as r:
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert r.headers["retry-after"].isdigit()
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) <= 3, statuses  # 1/s: not 20 opens in a fraction of a second
