"""Last-Event-ID resume: exactly the missed versions (from the memory ring, and from the Redis
change stream after a proxy restart), and a fresh put when the history does not reach."""

from __future__ import annotations

import asyncio

import pytest

from proxy.storage.layout import changes_key
from tests.integration.streams_support import (
    Stream,
    b64_context,
    color,
    data,
    doc_with,
    push,
)

pytestmark = pytest.mark.integration




async def _three_changes(server) -> list[int]:
    return [
        await push(server, doc_with(color=color("blue"))),
        await push(server, doc_with(color=color("green"), extra={
            "state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a"})),
        await push(server, doc_with(color=color("green"))),  # removes "extra"
    ]


async def _assert_replay(client, key: str, last: int, missed: list[int]) -> None:
    async with Stream(client, "/v1/stream/rules", key=key, last_event_id=str(last)) as s:
        got = await s.take(len(missed))
        assert [(e.event, e.id) for e in got] == [
            ("patch", str(missed[0])), ("patch", str(missed[1])), ("delete", str(missed[2]))]
        assert data(got[0])["flags"]["color"]["defaultVariant"] == "blue"
        assert set(data(got[1])["flags"]) == {"color", "extra"}
        assert data(got[2])["flags"] == ["extra"]
        # nothing more was queued: the next event is the next push
        await asyncio.sleep(0)
        assert s.events.empty()


async def test_resume_from_ring_yields_exactly_the_missed_versions(streams_served):
    server, client, v1 = streams_served
    skey = server.create_key("server")
    ckey = server.create_key("client")
    async with Stream(client, "/v1/stream/rules", key=skey) as s:
        put = await s.next()
        assert put.id == str(v1)
    missed = await _three_changes(server)
    await _assert_replay(client, skey, v1, missed)
    async with Stream(client, "/ofrep/v1/events", key=ckey, last_event_id=str(v1)) as ev:
        got = await ev.take(3)
        assert [e.id for e in got] == [str(v) for v in missed]
        v5 = await push(server, doc_with(color=color("red")))
        assert (await ev.next()).id == str(v5)  # live again, no duplicate of missed[-1]
    # evaluated: one patch with only what changed for this context since v1
    ctx = {"context": b64_context({"targetingKey": "u", "plan": "free"})}
    async with Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx,
                      last_event_id=str(missed[0])) as st:
        got = await st.next()
        assert (got.event, got.id) == ("patch", str(v5))
        assert [(i["key"], i["value"]) for i in data(got)["flags"]] == [("color", "red")]
    # up to date: no put, just the live stream
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id=str(v5)) as s:
        first = await s.next(data_only=False)
        assert first.data == "" and first.event == "message"
        v6 = await push(server, doc_with(color=color("blue")))
        got = await s.next()
        assert (got.event, got.id, s.events.empty()) == ("patch", str(v6), True)


async def test_resume_after_restart_replays_from_redis_then_put_when_trimmed(streams_served):
    server, client, v1 = streams_served
    skey = server.create_key("server")
    missed = await _three_changes(server)
    await asyncio.to_thread(server.restart)  # new process: the memory ring is empty
    await asyncio.to_thread(server.wait_version, missed[-1])
    await _assert_replay(client, skey, v1, missed)
    # evaluated stream: the rules of v1 are rebuilt from the change stream, so the client
    # gets only its net difference (color red -> green), not a put
    ckey = server.create_key("client")
    ctx = {"context": b64_context({"targetingKey": "u", "plan": "free"})}
    for _ in range(2):  # the second resume is answered from the shared history cache
        async with Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx,
                          last_event_id=str(v1)) as st:
            got = await st.next()
            assert (got.event, got.id) == ("patch", str(missed[-1]))
            assert [(i["key"], i["value"]) for i in data(got)["flags"]] == [("color", "green")]
    # trim the change stream so it no longer reaches back: a fresh put instead (resuming
    # from v2, which this proxy has not read before; v1's replay is cached and still true)
    r = server.redis_client
    assert r.xtrim(changes_key(server.env), maxlen=1, approximate=False) >= 3
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id=str(missed[0])) as s:
        put = await s.next()
        assert (put.event, put.id) == ("put", str(missed[-1]))
        assert set(data(put)["document"]["flags"]) == {"banner", "color"}
    # an id from the future (another epoch's numbering) gets a put too
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id="999") as s:
        assert (await s.next()).event == "put"
