"""Proxy-side faults with real processes: started while Redis is down (bootstrap file, or
nothing at all) and SIGTERM under load with open streams.

Single-request versions of these live in tests/integration (test_api_outage.py,
test_api_serve.py, test_streams_lifecycle.py); here the same faults meet concurrent load and
the transition back to Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import orjson
import pytest
import redis

from proxy.storage import keys
from tests.chaos.conftest import Load, Recorder, metric, push, ready_state, until
from tests.integration.streams_support import Stream, b64_context

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def source_doc(where: str) -> dict[str, Any]:
    return {"flags": {"origin": {"state": "ENABLED",
                                 "variants": {"boot": "bootstrap", "redis": "redis"},
                                 "defaultVariant": where}}}


async def test_started_while_redis_down_serves_bootstrap_then_adopts_redis(
        proxy_factory, redis_server, tmp_path, http):
    # Redis holds newer rules and the keys; the proxy starts while Redis is down, with the
    # bootstrap file and a keys export (what an operator ships next to the proxy).
    v = push(redis_server.url, "test", source_doc("redis"))
    client_r = redis.Redis.from_url(redis_server.url)
    raw, _record = keys.create(client_r, "test", "client", "chaos")
    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(keys.export(client_r))
    client_r.close()
    boot = tmp_path / "boot.json"
    boot.write_bytes(orjson.dumps(source_doc("boot")))
    redis_server.kill()

    server = proxy_factory(extra_args=["--bootstrap", str(boot), "--keys", str(keys_file)],
                           wait="readyz")
    client = http(server)
    status, body = await ready_state(client)
    assert status == 200 and body["status"] == "degraded" and "unreachable" in body["reason"]
    assert "bootstrap env=test" in server.logs()  # the details are in the log
    async with Load(server.url, raw, "origin", workers=4, rate=25) as load:
        await load.wait_more(60)
        assert {s.body["value"] for s in load.samples} == {"bootstrap"}

        await asyncio.to_thread(redis_server.start)  # its data (AOF) is back
        answered = time.monotonic()
        await until(lambda: load.samples[-1].body.get("value") == "redis", 5,
                    "evaluations switch to Redis's rules")
        switched = time.monotonic() - answered
        await until(lambda: _ok(client), 5, "readyz ok")
        assert (await ready_state(client))[1]["envs"]["test"] == v
        mark = load.mark()
        await load.wait_more(40)
        assert {s.body["value"] for s in load.since(mark)} == {"redis"}
        # The key (now read from Redis) keeps working, and new pushes are followed.
        v2 = await asyncio.to_thread(push, redis_server.url, "test", {"flags": {}})
        await asyncio.to_thread(server.wait_version, v2)
        await until(lambda: load.samples[-1].status == 404, 5, "deleted flag is gone")

    values = [s.status for s in load.samples]
    first_404 = values.index(404)
    assert all(code == 200 for code in values[:first_404]), load.failures()[:3]
    assert all(code == 404 for code in values[first_404:])
    assert switched < 1.5, f"Redis's rules served {switched:.2f}s after it answered"


async def _ok(client: httpx.AsyncClient) -> bool:
    return (await ready_state(client))[1].get("status") == "ok"


async def test_no_redis_no_bootstrap_many_callers_get_a_prompt_503(proxy_factory, redis_server,
                                                                   http):
    push(redis_server.url, "test", source_doc("redis"))
    redis_server.kill()
    server = proxy_factory(extra_args=["--no-auth"])
    client = http(server)
    assert (await ready_state(client))[0] == 503
    # Many concurrent callers, each bounded by a client timeout: every one a clear 503.
    timeout = httpx.Timeout(2.0)
    started = time.monotonic()
    answers = await asyncio.gather(*(
        client.post("/ofrep/v1/evaluate/flags/origin", json={}, timeout=timeout)
        for _ in range(50)), *(
        client.post("/ofrep/v1/evaluate/flags", json={}, timeout=timeout)
        for _ in range(50)))
    took = time.monotonic() - started
    assert {r.status_code for r in answers} == {503}
    assert all(r.json()["errorCode"] == "GENERAL" and r.headers.get("retry-after")
               for r in answers), answers[0].text
    assert took < 2.0, f"100 concurrent 503s took {took:.2f}s"

    # Redis returns: the same callers are served without restarting the proxy.
    await asyncio.to_thread(redis_server.start)
    answered = time.monotonic()
    await until(lambda: _ok(client), 5, "readyz ok once Redis answers")
    assert time.monotonic() - answered < 1.5
    r = await client.post("/ofrep/v1/evaluate/flags/origin", json={})
    assert r.status_code == 200 and r.json()["value"] == "redis"


async def test_sigterm_under_load_completes_in_flight_and_closes_streams(proxy_server,
                                                                       redis_server, http):
    v = await asyncio.to_thread(push, redis_server.url, "test", source_doc("redis"))
    await asyncio.to_thread(proxy_server.wait_version, v)
    ckey = await asyncio.to_thread(proxy_server.create_key, "client")
    skey = await asyncio.to_thread(proxy_server.create_key, "server")
    client = http(proxy_server)
    ctx = {"context": b64_context({"targetingKey": "u"})}
    streams = [Stream(client, "/ofrep/v1/events", key=ckey),
               Stream(client, "/v1/stream/rules", key=skey),
               Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx)]
    slow_client = http(proxy_server, ckey, timeout=10.0,
                       limits=httpx.Limits(max_connections=30))
    loop = asyncio.get_running_loop()
    async with Load(proxy_server.url, ckey, "origin", workers=4, rate=50) as load, \
            streams[0] as a, streams[1] as b, streams[2] as c:
        recs = [Recorder(s) for s in (a, b, c)]
        await load.wait_more(40)
        # 20 requests that each stay in flight ~500 ms: they name a version the proxy will
        # never reach (flagConfigEtag), so it waits its catch-up bound before answering.
        slow = [asyncio.create_task(slow_client.post(
            "/ofrep/v1/evaluate/flags", params={"flagConfigEtag": "999"}, json={}))
            for _ in range(20)]
        await until(lambda: _in_flight(client, 20), 5, "20 slow requests in flight")
        sigterm_at = loop.time()
        stopping = asyncio.create_task(asyncio.to_thread(proxy_server.stop, 15))
        answers = await asyncio.gather(*slow, return_exceptions=True)
        for s in (a, b, c):
            await s.wait_ended(timeout=10)
        code = await stopping
        await load.stop()
        for rec in recs:
            rec.drain_now()

    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in answers), answers
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM after a clean exit
    for s, rec in zip((a, b, c), recs, strict=True):
        assert s.error is None, f"{s.url}: {s.error!r}"  # a proper end of body, not a cut
        assert rec.retry_hints() == [3000], f"{s.url}: retry hints {rec.retry_hints()}"
    # No error response at all; requests that got no answer were sent after the signal
    # (refused, or on a keep-alive connection the server was closing).
    assert {s.status for s in load.samples} <= {200, 0}
    early = [s for s in load.samples if s.status == 0 and s.started < sigterm_at - 0.05]
    assert not early, early[:3]
    logs = proxy_server.logs()
    assert "closed 3 streams" in logs and "flagedge stopped" in logs, logs[-2000:]


async def _in_flight(client: httpx.AsyncClient, n: int) -> bool:
    value = metric((await client.get("/metrics")).text, "flagedge_http_requests_in_flight")
    return value is not None and value >= n + 1  # the scrape is in flight too
