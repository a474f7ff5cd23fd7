"""Redis faults under load, end to end: a real `flagedge serve`, a paced evaluation load and
open SSE streams while the test SIGKILLs, empties or pauses the real redis-server.

What the integration tests already prove (source-level kill/empty/resync, /readyz during an
outage) is not repeated here; these add the load, the streams and the timing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis

from tests.chaos.conftest import Load, Recorder, metric, percentile, push, ready_state, until
from tests.integration.streams_support import Stream, b64_context, state_id_in_redis, vid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 5.0


def number_flag(n: int) -> dict[str, Any]:
    """A flag whose value (and so every stream's view of it) changes with every push."""
    return {"state": "ENABLED", "variants": {"current": n, "other": -1},
            "defaultVariant": "current"}


def doc(n: int, **extra: Any) -> dict[str, Any]:
    return {"flags": {"n": number_flag(n), **extra}}


async def open_streams(server, client, ckey: str, skey: str) -> list[Stream]:
    ctx = {"context": b64_context({"targetingKey": "chaos-user"})}
    return [Stream(client, "/ofrep/v1/events", key=ckey),
            Stream(client, "/v1/stream/rules", key=skey),
            Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx)]


def state_id(url: str, version: int) -> str:
    """The state id of ``version`` of env ``test`` from Redis, with a client of its own (the
    test's Redis may have been restarted since any earlier client connected)."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        return state_id_in_redis(client, "test", version)
    finally:
        client.close()


async def test_redis_sigkilled_for_5s_under_load_and_streams(proxy_server, redis_server, http):
    base = await asyncio.to_thread(push, redis_server.url, "test", doc(1))
    await asyncio.to_thread(proxy_server.wait_version, base)
    ckey = await asyncio.to_thread(proxy_server.create_key, "client")
    skey = await asyncio.to_thread(proxy_server.create_key, "server")
    client = http(proxy_server)
    streams = await open_streams(proxy_server, client, ckey, skey)
    async with Load(proxy_server.url, ckey, "n", workers=4, rate=25) as load, \
            streams[0] as s_events, streams[1] as s_rules, streams[2] as s_eval:
        recs = [Recorder(s) for s in (s_events, s_rules, s_eval)]
        for rec in recs[1:]:  # the events stream sends no data event until a change
            await rec.drain_until(base)
        await load.wait_more(40)

        killed_at = time.monotonic()
        redis_server.kill()
        await until(lambda: _status_is(client, "degraded"), 5, "readyz degraded")
        degraded = (await ready_state(client))[1]
        assert "redis" in degraded["reason"].lower()
        # The outage itself lasts OUTAGE_S (the fault's length, not a wait for a condition);
        # the load keeps running and must be answered from the stale rules meanwhile.
        during = load.mark()
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
        outage = load.since(during)
        assert len(outage) > 50, "the load did not run during the outage"
        assert not load.failures(outage), load.failures(outage)[:3]
        assert all(s.body["value"] == 1 for s in outage)  # stale rules, the last good value
        assert (await ready_state(client))[1]["status"] == "degraded"

        await asyncio.to_thread(redis_server.start)  # same port, same AOF: data kept
        answered = time.monotonic()
        await until(lambda: _status_is(client, "ok"), 5, "readyz ok after redis returns")
        resync = time.monotonic() - answered
        scrape = (await client.get("/metrics")).text
        assert metric(scrape, "flagedge_source_connected", env="test") == 1.0
        assert metric(scrape, "flagedge_source_degraded", env="test") == 0.0

        # Every change pushed after the restart reaches the store and every stream.
        versions = []
        for n in range(2, 7):
            versions.append(await asyncio.to_thread(push, redis_server.url, "test", doc(n)))
        assert versions == list(range(base + 1, base + 6))
        await asyncio.to_thread(proxy_server.wait_version, versions[-1])
        r = await client.post("/ofrep/v1/evaluate/flags/n", json={"context": {}},
                              headers={"Authorization": f"Bearer {ckey}"})
        assert r.status_code == 200 and r.json()["value"] == 6
        for rec in recs:
            ids = await rec.drain_until(versions[-1])
            tail = [i for i in ids if i > base]
            # Live streams merge changes arriving within sse_coalesce_ms into one event at
            # the newest version (docs/streams.md), so a burst may skip ids it never held;
            # never a repeat or a step back, and the newest version always arrives.
            assert tail == sorted(set(tail)) and set(tail) <= set(versions), \
                f"{rec.stream.url}: repeat or unknown version in {ids}"
            assert tail[-1] == versions[-1], f"{rec.stream.url}: newest missing in {ids}"
            last = [e for e in rec.events if e.data and e.id][-1]
            if rec.stream.url.endswith("/evaluated"):  # the newest value reached the stream
                assert orjson.loads(last.data)["flags"][0]["value"] == 6
            elif rec.stream.url.endswith("/rules"):
                assert orjson.loads(last.data)["flags"]["n"] == number_flag(6)
        # A client that was cut off during the outage resumes with Last-Event-ID (the state
        # id it held, as the rules stream sent it before the outage) and gets exactly the
        # versions it missed, each with the id any replica derives from Redis.
        base_id = next(e.id for e in recs[1].events if e.data and vid(e) == base)
        assert base_id == state_id(redis_server.url, base)
        wanted = [state_id(redis_server.url, v) for v in versions]
        for url, key in (("/ofrep/v1/events", ckey), ("/v1/stream/rules", skey)):
            async with Stream(client, url, key=key, last_event_id=base_id) as resumed:
                rec = Recorder(resumed)
                assert await rec.drain_until(versions[-1]) == versions, url
                assert rec.state_ids() == wanted, url
        await load.wait_more(20)
        failures = load.failures()
        assert not failures, failures[:3]
        assert load.samples[-1].body["value"] == 6

    print(f"resync {resync * 1000:.0f} ms after Redis answered; {len(load.samples)} "
          f"evaluations, {len(outage)} during the outage, 0 failed")
    assert resync < 1.0, f"resync took {resync:.2f}s after redis answered"


async def _status_is(client, status: str) -> bool:
    return (await ready_state(client))[1].get("status") == status


async def test_redis_restarted_empty_keeps_last_good_until_republished(proxy_server,
                                                                       redis_server, http):
    await asyncio.to_thread(push, redis_server.url, "test", doc(1))
    v2 = await asyncio.to_thread(push, redis_server.url, "test", doc(2, extra={
        "state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a"}))
    await asyncio.to_thread(proxy_server.wait_version, v2)
    ckey = await asyncio.to_thread(proxy_server.create_key, "client")
    skey = await asyncio.to_thread(proxy_server.create_key, "server")
    client = http(proxy_server)
    s_events, s_rules, s_eval = await open_streams(proxy_server, client, ckey, skey)
    async with Load(proxy_server.url, ckey, "n", workers=2, rate=25) as load, \
            s_events, s_rules, s_eval:
        rules, evaluated, events = Recorder(s_rules), Recorder(s_eval), Recorder(s_events)
        await rules.drain_until(v2)
        await evaluated.drain_until(v2)
        await load.wait_more(20)
        old_epoch = _data(rules.events[-1])["epoch"]

        await asyncio.to_thread(redis_server.restart, True)  # SIGKILL, data wiped
        await until(lambda: _reason_is(client, "stale: 1 environment"), 10, "empty redis reported")
        scrape = (await client.get("/metrics")).text
        assert metric(scrape, "flagedge_source_degraded", env="test") == 1.0
        status, body = await ready_state(client)
        assert status == 200 and body["envs"]["test"] == v2
        mark = load.mark()
        await load.wait_more(20)
        kept = load.since(mark)
        assert not load.failures(kept) and all(s.body["value"] == 2 for s in kept)
        bulk = await client.post("/ofrep/v1/evaluate/flags", json={},
                                 headers={"Authorization": f"Bearer {ckey}"})
        assert {f["key"] for f in bulk.json()["flags"]} == {"n", "extra"}

        # The operator re-publishes: a new epoch (version 1) replaces the kept rules, and
        # every open stream hears of it although its numbering went back to 1.
        v = await asyncio.to_thread(push, redis_server.url, "test", doc(9))
        assert v == 1
        new_id = state_id(redis_server.url, 1)  # version 1 of the new epoch
        put_sse = await _next_event(rules, "put", timeout=5)
        put = _data(put_sse)
        assert put["epoch"] != old_epoch and put["version"] == 1
        assert put_sse.id == new_id
        assert set(put["document"]["flags"]) == {"n"}
        note = await _next_event(events, "message", timeout=5)
        assert vid(note) == 1 and note.id == _data(note)["etag"] == new_id
        seen: dict[str, Any] = {}
        while set(seen) != {"patch", "delete"}:
            sse = await _next_event(evaluated, None, timeout=5)
            seen[sse.event] = _data(sse)
        assert [(f["key"], f["value"]) for f in seen["patch"]["flags"]] == [("n", 9)]
        assert seen["delete"]["flags"] == ["extra"]
        await until(lambda: _status_is(client, "ok"), 5, "readyz ok after re-publish")
        scrape = (await client.get("/metrics")).text
        assert metric(scrape, "flagedge_source_degraded", env="test") == 0.0
        mark = load.mark()
        await load.wait_more(10)
        assert all(s.body["value"] == 9 for s in load.since(mark))
        assert not load.failures(), load.failures()[:3]
        # And the new epoch's next version reaches the streams as usual.
        assert await asyncio.to_thread(push, redis_server.url, "test", doc(10)) == 2
        assert _data(await _next_event(rules, "patch", timeout=5))["version"] == 2


def _data(sse) -> dict[str, Any]:
    return orjson.loads(sse.data)


async def _reason_is(client, text: str) -> bool:
    """/readyz's reason is a short fixed phrase (Redis's own words go to the log): connected
    to an empty Redis, the served environment is stale and Redis is not "unreachable"."""
    return (await ready_state(client))[1].get("reason") == text


async def _next_event(rec: Recorder, event: str | None, timeout: float):
    """The next data event (of type ``event``, if given) on a recorded stream."""
    deadline = time.monotonic() + timeout
    while True:
        sse = await rec.stream.next(max(0.01, deadline - time.monotonic()))
        rec.events.append(sse)
        if event is None or sse.event == event:
            return sse


async def test_redis_paused_does_not_slow_evaluations(proxy_server, redis_server, http):
    v = await asyncio.to_thread(push, redis_server.url, "test", doc(1))
    await asyncio.to_thread(proxy_server.wait_version, v)
    ckey = await asyncio.to_thread(proxy_server.create_key, "client")
    client = http(proxy_server)
    pause_s = 3.0
    loop = asyncio.get_running_loop()
    async with Load(proxy_server.url, ckey, "n", workers=4, rate=25) as load:
        await load.wait_more(40)  # warm up connections
        before = load.mark()
        await load.wait_more(200, timeout=20)
        baseline = load.since(before)

        admin = redis.Redis.from_url(redis_server.url)
        try:
            # Every client of this Redis (the proxy's follower included) blocks for pause_s.
            assert admin.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")
            paused_at = loop.time()
            during = load.mark()
            probe = asyncio.create_task(asyncio.to_thread(_ping_seconds, redis_server.url))
            await until(lambda: _status_is(client, "ok"), 1, "readyz answers during pause")
            await until(lambda: loop.time() > paused_at + pause_s, pause_s + 5, "pause over")
            paused = [s for s in load.since(during) if s.started < paused_at + pause_s]
            blocked = await probe
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        after = load.mark()
        await load.wait_more(200, timeout=20)
        baseline_after = load.since(after)

    assert blocked > pause_s - 1.0, f"the pause did not hold Redis clients ({blocked:.2f}s)"
    assert len(paused) >= 100
    assert not load.failures(), load.failures()[:3]
    # Ratios against the same load just before and just after (the larger, so a burst of
    # noise from other processes on this 2-core machine on one side does not decide it).
    p50_ref = max(percentile([s.latency for s in baseline], 50),
                  percentile([s.latency for s in baseline_after], 50))
    p50_during = percentile([s.latency for s in paused], 50)
    worst = max(s.latency for s in paused)
    print(f"p50 before/after {p50_ref * 1000:.2f} ms, during the pause "
          f"{p50_during * 1000:.2f} ms, worst {worst * 1000:.1f} ms; a PING waited {blocked:.2f} s")
    assert p50_during <= 3 * p50_ref, (p50_ref, p50_during)
    assert worst < pause_s / 2, f"a request blocked {worst:.2f}s during a {pause_s}s pause"


def _ping_seconds(url: str) -> float:
    """How long a PING from a fresh client takes (a paused Redis holds it)."""
    c = redis.Redis.from_url(url, socket_timeout=10)
    try:
        started = time.monotonic()
        c.ping()
        return time.monotonic() - started
    finally:
        c.close()


async def test_keys_kept_after_data_loss_survive_a_later_reconnect(proxy_server, redis_server,
                                                                    http):
    """Redis loses everything (keys included); the operator re-publishes the flags but has not
    re-created the keys yet. The proxy keeps the keys it knew; a later Redis blip must not
    turn that into a mass revocation (every client 401)."""
    v = await asyncio.to_thread(push, redis_server.url, "test", doc(1))
    await asyncio.to_thread(proxy_server.wait_version, v)
    ckey = await asyncio.to_thread(proxy_server.create_key, "client")
    client = http(proxy_server)
    async with Load(proxy_server.url, ckey, "n", workers=2, rate=25) as load:
        await load.wait_more(10)
        await asyncio.to_thread(redis_server.restart, True)
        await until(lambda: _reason_is(client, "stale: 1 environment"), 10, "empty redis reported")
        assert await asyncio.to_thread(push, redis_server.url, "test", doc(5)) == 1
        await until(lambda: load.samples[-1].body.get("value") == 5, 5, "re-publish adopted")
        connects = proxy_server.logs().count("redis connected")
        await asyncio.to_thread(redis_server.restart)  # a blip: same (flags-only) data
        await until(lambda: proxy_server.logs().count("redis connected") > connects, 5,
                    "reconnected after the blip")
        await until(lambda: _status_is(client, "ok"), 5, "ready after the blip")
        mark = load.mark()
        await load.wait_more(20)
        assert {s.status for s in load.since(mark)} == {200}
    assert not load.failures(), load.failures()[:3]
