"""Last-Event-ID resume: exactly the missed versions (from the memory ring, and from the Redis
change stream after a proxy restart), and a fresh put when the history does not reach.

``Last-Event-ID`` is a state id (``VERSION-TAG``) the server sent earlier; a bare version
number or a wrong tag names no state the server passed through and gets a fresh snapshot."""

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
    state_id_in_redis,
    vid,
)

pytestmark = pytest.mark.integration


def sid(server, version: int) -> str:
    """The state id the proxy must send for ``version``, worked out from Redis."""
    return state_id_in_redis(server.redis_client, server.env, version)


async def _three_changes(server) -> list[int]:
    return [
        await push(server, doc_with(color=color("blue"))),
        await push(server, doc_with(color=color("green"), extra={
            "state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a"})),
        await push(server, doc_with(color=color("green"))),  # removes "extra"
    ]


async def _assert_replay(client, key: str, last_id: str, missed_ids: list[str]) -> None:
    async with Stream(client, "/v1/stream/rules", key=key, last_event_id=last_id) as s:
        got = await s.take(len(missed_ids))
        assert [(e.event, e.id) for e in got] == [
            ("patch", missed_ids[0]), ("patch", missed_ids[1]), ("delete", missed_ids[2])]
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
        assert put.id == sid(server, v1)
    id1 = put.id  # what a client holds: resumes name it
    missed = await _three_changes(server)
    missed_ids = [sid(server, v) for v in missed]
    await _assert_replay(client, skey, id1, missed_ids)
    async with Stream(client, "/ofrep/v1/events", key=ckey, last_event_id=id1) as ev:
        got = await ev.take(3)
        assert [e.id for e in got] == missed_ids
        assert [data(e)["etag"] for e in got] == missed_ids
        v5 = await push(server, doc_with(color=color("red")))
        live = await ev.next()
        assert live.id == sid(server, v5)  # live again, no duplicate of missed[-1]
    id5 = live.id
    # evaluated: one patch with only what changed for this context since missed[0]
    ctx = {"context": b64_context({"targetingKey": "u", "plan": "free"})}
    async with Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx,
                      last_event_id=got[0].id) as st:
        got_ev = await st.next()
        assert (got_ev.event, got_ev.id) == ("patch", id5)
        assert [(i["key"], i["value"]) for i in data(got_ev)["flags"]] == [("color", "red")]
    # up to date: no put, just the live stream
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id=id5) as s:
        first = await s.next(data_only=False)
        assert first.data == "" and first.event == "message"
        v6 = await push(server, doc_with(color=color("blue")))
        got_p = await s.next()
        assert (got_p.event, got_p.id, s.events.empty()) == ("patch", sid(server, v6), True)
    id6 = got_p.id
    # The bare version number of the current state, or its number with another tag, names no
    # state this server passed through: a fresh put (rules), one notification (events).
    for unknown in (str(v6), f"{v6}-00000000", f"{v1}-00000000"):
        if unknown == id6:
            continue  # (a 1 in 2^32 tag clash)
        async with Stream(client, "/v1/stream/rules", key=skey, last_event_id=unknown) as s:
            fresh = await s.next()
            assert (fresh.event, fresh.id) == ("put", id6), unknown
            assert data(fresh)["version"] == v6
        async with Stream(client, "/ofrep/v1/events", key=ckey, last_event_id=unknown) as ev:
            note = await ev.next()
            assert (note.event, note.id, data(note)["etag"]) == ("message", id6, id6), unknown
            # A replay would have come in the same first chunk, queued before next() returned.
            assert ev.events.empty(), unknown  # one notification, not a replay


async def test_resume_after_restart_replays_from_redis_then_put_when_trimmed(streams_served):
    server, client, v1 = streams_served
    skey = server.create_key("server")
    missed = await _three_changes(server)
    # The ids a client of the first process held: computed from Redis, as any replica would.
    ids = {v: sid(server, v) for v in (v1, *missed)}
    await asyncio.to_thread(server.restart)  # new process: the memory ring is empty
    await asyncio.to_thread(server.wait_version, missed[-1])
    await _assert_replay(client, skey, ids[v1], [ids[v] for v in missed])
    # evaluated stream (client keys): past the memory ring a put of the context's results;
    # rebuilding v1 from the change log would compile the environment per request, for any
    # id a browser chose (issue 20)
    ckey = server.create_key("client")
    ctx = {"context": b64_context({"targetingKey": "u", "plan": "free"})}
    async with Stream(client, "/v1/stream/evaluated", key=ckey, params=ctx,
                      last_event_id=ids[v1]) as st:
        got = await st.next()
        assert (got.event, got.id) == ("put", ids[missed[-1]])
        assert {i["key"]: i["value"] for i in data(got)["flags"]}["color"] == "green"
    # trim the change stream so it no longer reaches back: a fresh put instead (resuming
    # from v2, which this proxy has not read before; v1's replay is cached and still true)
    r = server.redis_client
    assert r.xtrim(changes_key(server.env), maxlen=1, approximate=False) >= 3
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id=ids[missed[0]]) as s:
        put = await s.next()
        assert (put.event, put.id) == ("put", ids[missed[-1]])
        assert vid(put) == data(put)["version"] == missed[-1]
        assert set(data(put)["document"]["flags"]) == {"banner", "color"}
    # an id from the future (another epoch's numbering) gets a put too
    async with Stream(client, "/v1/stream/rules", key=skey, last_event_id="999") as s:
        assert (await s.next()).event == "put"
