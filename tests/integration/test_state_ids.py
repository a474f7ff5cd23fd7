"""Stream ids, resume, ETags and catch-up name a state, not only a version (issue 20).

After Redis lost its data and an operator re-published (a new epoch, versions 1..3 again), a
client holding the old epoch's version 3 must not be told "nothing changed": every stream
``id:``, ``Last-Event-ID``, OFREP notification etag and ``/v1/rules`` ETag is a state id
(``VERSION-TAG``, the tag naming the epoch and the write), and an id the server's history did
not pass through gets a fresh snapshot. The failover story (a lagging replica promoted, so
Redis's version 3 is another write) is in tests/chaos/test_failover.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent

from proxy.model import id_version
from proxy.provider import FlagedgeProvider
from proxy.storage import layout
from tests.integration.streams_support import Stream, b64_context, data
from tests.redis_server import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESUME_S = 3.0  # deadline for a resumed stream's first event


def doc(n: int) -> dict[str, Any]:
    return {"flags": {"n": {"state": "ENABLED", "variants": {"current": n, "other": -1},
                            "defaultVariant": "current"}}}


def republish_after_loss(server: Any, redis_server: Any, values: list[int]) -> list[int]:
    """Redis restarted empty; the operator restores the key hash (a backup of
    ``flagedge:keys``) and pushes again: a new epoch numbering from 1."""
    saved = server.redis_client.hgetall(layout.KEYS)
    redis_server.restart(empty=True)
    server._redis_client = None  # the old connection died with the server
    server.redis_client.hset(layout.KEYS, mapping=saved)
    return [server.push(doc(v), wait=False) for v in values]


async def test_a_republish_after_data_loss_reaches_live_and_resuming_clients(
        proxy_server, redis_server):
    server = proxy_server
    for v in (1, 2, 3):
        server.push(doc(v))
    skey, ckey = server.create_key("server"), server.create_key("client")
    ctx = b64_context({"targetingKey": "u1"})
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        rules_a = await http.get("/v1/rules", headers={"Authorization": f"Bearer {skey}"})
        etag_a = rules_a.headers["etag"]
        async with Stream(http, "/v1/stream/rules", key=skey) as rules, \
                Stream(http, "/ofrep/v1/events", key=ckey) as events, \
                Stream(http, "/v1/stream/evaluated", key=ckey, params={"context": ctx}) as ev:
            put_a = await rules.next()
            assert put_a.event == "put"
            id_a = put_a.id
            assert id_version(id_a) == 3 and etag_a == f'"{id_a}"'
            assert (await events.next(data_only=False)).id == id_a  # id only: holds state A3
            assert (await ev.next()).id == id_a

            assert republish_after_loss(server, redis_server, [11, 12, 13]) == [1, 2, 3]
            # Live streams: the new epoch's version 3 arrives as a state the client never held
            # (as a put, or a put of B1 and patches, depending on when the proxy reconnected).
            def new_three(e: Any) -> bool:
                return id_version(e.id) == 3 and e.id != id_a

            id_b = (await _until_event(rules, new_three)).id
            note = await _until_event(events, new_three)
            patch = await _until_event(ev, new_three)
            assert data(note)["etag"] == id_b and patch.id == id_b
            assert data(patch)["flags"][0]["value"] == 13
            # The OFREP web flow: a re-fetch naming the notification's etag gets the new rules.
            bulk = await http.post("/ofrep/v1/evaluate/flags", json={"context": {}},
                                   params={"flagConfigEtag": data(note)["etag"]},
                                   headers={"Authorization": f"Bearer {ckey}"})
            assert bulk.json()["flags"][0]["value"] == 13

        # Pollers: the old epoch's ETag is not "not modified".
        polled = await http.get("/v1/rules", headers={"Authorization": f"Bearer {skey}",
                                                      "If-None-Match": etag_a})
        assert polled.status_code == 200 and polled.headers["etag"] == f'"{id_b}"'
        assert polled.json()["flags"]["n"]["variants"]["current"] == 13

        # Resumes with the old epoch's id of the same number: a fresh snapshot, never silence.
        async with Stream(http, "/v1/stream/rules", key=skey, last_event_id=id_a) as s:
            got = await s.next(timeout=RESUME_S)
            assert (got.event, got.id) == ("put", id_b)
        async with Stream(http, "/ofrep/v1/events", key=ckey, last_event_id=id_a) as s:
            got = await s.next(timeout=RESUME_S)
            assert (data(got)["type"], got.id) == ("refetchEvaluation", id_b)
        async with Stream(http, "/v1/stream/evaluated", key=ckey, last_event_id=id_a,
                          params={"context": ctx}) as s:
            got = await s.next(timeout=RESUME_S)
            assert (got.event, got.id, data(got)["flags"][0]["value"]) == ("put", id_b, 13)
        # And with the current id: nothing to replay.
        async with Stream(http, "/v1/stream/rules", key=skey, last_event_id=id_b) as s:
            got = await s.next(timeout=2.0, data_only=False)
            assert got.data == "" and got.retry is not None
            assert s.events.empty()


async def _until_event(stream: Stream, match: Any, timeout: float = 10.0) -> Any:
    """The first event matching ``match``; the proxy first has to notice the restart (it
    reconnects within about a second), then every push reaches it in milliseconds."""
    deadline = time.monotonic() + timeout
    while True:
        event = await stream.next(timeout=max(0.01, deadline - time.monotonic()))
        if match(event):
            return event


def test_a_provider_holding_the_old_epoch_converges_after_a_proxy_restart(
        proxy_server, redis_server):
    """The provider reconnects with ``Last-Event-ID`` of epoch A version 3 to a proxy that
    serves epoch B version 3: it must be sent the rules, not told it is up to date."""
    server = proxy_server
    for v in (1, 2, 3):
        server.push(doc(v))
    key = server.create_key("server")
    provider = FlagedgeProvider(server.url, key, init_timeout=10.0, backoff_initial=0.05,
                                backoff_max=0.5)
    changed: list[EventDetails] = []
    try:
        api.set_provider_and_wait(provider, domain="state-ids")
        client = api.get_client("state-ids")
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed.append)
        assert client.get_integer_value("n", 0) == 3

        server.stop()  # the provider keeps epoch A version 3 and its stream id
        republish_after_loss(server, redis_server, [11, 12, 13])
        server.start(wait="readyz")
        wait_until(lambda: client.get_integer_value("n", 0) == 13, timeout=10,
                   what="the provider to take epoch B's version 3")
        # The SDK runs handlers after the provider swapped its rules: wait for the event too.
        wait_until(lambda: any(d.flags_changed == ["n"] for d in changed), timeout=5,
                   what="PROVIDER_CONFIGURATION_CHANGED naming n")
    finally:
        api.shutdown()


async def test_the_ids_every_replica_gives_are_equal_and_resume_across_them(proxy_factory):
    """Replicas compute the same state id from Redis, so a stream resumes on another one."""
    a, b = proxy_factory(), proxy_factory()
    for v in (1, 2):
        a.push(doc(v))
    b.wait_version(2)
    skey = a.create_key("server")
    wait_until(lambda: b.key_works(skey), timeout=10, what="key on replica b")
    async with httpx.AsyncClient(timeout=5.0) as http:
        etags = []
        for server in (a, b):
            r = await http.get(f"{server.url}/v1/rules",
                               headers={"Authorization": f"Bearer {skey}"})
            etags.append(r.headers["etag"])
        assert etags[0] == etags[1]
        async with Stream(http, f"{a.url}/v1/stream/rules", key=skey) as s:
            held = (await s.next()).id
        v3 = a.push(doc(3))
        b.wait_version(v3)
        async with Stream(http, f"{b.url}/v1/stream/rules", key=skey, last_event_id=held) as s:
            first = await s.next()
            assert first.event == "patch" and id_version(first.id) == v3
            assert data(first)["flags"]["n"]["variants"]["current"] == 3
