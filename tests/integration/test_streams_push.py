"""A push reaches every stream type; the evaluated stream only tells contexts whose result
changed; auth on stream URLs; GET /v1/rules with ETag; the OFREP flow end to end."""

from __future__ import annotations

import pytest

from tests.integration.streams_support import (
    DOC,
    Stream,
    b64_context,
    color,
    data,
    doc_with,
    metric,
    push,
    state_id_in_redis,
)

pytestmark = pytest.mark.integration


def sid(server, version: int) -> str:
    """The state id the proxy must send for ``version``, worked out from Redis."""
    return state_id_in_redis(server.redis_client, server.env, version)


async def test_push_reaches_events_rules_and_evaluated_streams(streams_served):
    server, client, v1 = streams_served
    ckey = server.create_key("client")
    skey = server.create_key("server")
    ctx = b64_context({"targetingKey": "u1", "plan": "free"})
    async with Stream(client, "/ofrep/v1/events", key=ckey) as events, \
            Stream(client, "/v1/stream/rules", key=skey) as rules, \
            Stream(client, "/v1/stream/evaluated", key=ckey, params={"context": ctx}) as ev:
        first = await events.next(data_only=False)
        id1 = sid(server, v1)
        assert first.id == id1 and first.data == "" and first.retry == 3000
        put = await rules.next()
        assert put.event == "put" and put.id == id1
        assert set(data(put)["document"]["flags"]) == {"banner", "color"}
        eput = await ev.next()
        assert eput.event == "put" and eput.id == id1
        items = {i["key"]: i for i in data(eput)["flags"]}
        assert items["banner"]["value"] is False and items["color"]["value"] == "red"

        v2 = await push(server, doc_with(color=color("blue")))
        id2 = sid(server, v2)
        assert id2 != id1
        note = await events.next()
        assert (note.event, note.id) == ("message", id2)
        assert data(note)["type"] == "refetchEvaluation" and data(note)["etag"] == id2
        assert isinstance(data(note)["lastModified"], int)
        patch = await rules.next()
        assert (patch.event, patch.id) == ("patch", id2)
        assert data(patch)["flags"]["color"]["defaultVariant"] == "blue"
        epatch = await ev.next()
        assert (epatch.event, epatch.id) == ("patch", id2)
        assert [(i["key"], i["value"]) for i in data(epatch)["flags"]] == [("color", "blue")]

        v3 = await push(server, doc_with(color=None))
        id3 = sid(server, v3)
        assert (await events.next()).id == id3
        deleted = await rules.next()
        assert (deleted.event, deleted.id, data(deleted)["flags"]) == ("delete", id3, ["color"])
        edel = await ev.next()
        assert (edel.event, edel.id, data(edel)["flags"]) == ("delete", id3, ["color"])
        metrics = (await client.get("/metrics")).text
        for stream in ("events", "rules", "evaluated"):
            assert metric(metrics, "flagedge_sse_connections", stream=stream) == 1
            assert metric(metrics, "flagedge_sse_propagation_seconds_count", stream=stream) == 2
        # the rules stream sent its put and two changes
        assert metric(metrics, "flagedge_sse_events_total", stream="rules", outcome="sent") == 3


async def test_evaluated_stream_patches_only_contexts_whose_result_changed(streams_served):
    server, client, _v1 = streams_served
    key = server.create_key("client")
    pro = {"context": b64_context({"targetingKey": "p", "plan": "pro"})}
    free = {"context": b64_context({"targetingKey": "f", "plan": "free"})}
    async with Stream(client, "/v1/stream/evaluated", key=key, params=pro) as s_pro, \
            Stream(client, "/v1/stream/evaluated", key=key, params=free) as s_free:
        assert (await s_pro.next()).event == "put"
        assert (await s_free.next()).event == "put"
        # banner now also on for "free": pro's result (on, TARGETING_MATCH) is unchanged.
        v2 = await push(server, doc_with(banner={
            **DOC["flags"]["banner"],
            "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "free"]]}, "on", None]}}))
        got = await s_free.next()
        assert (got.event, got.id) == ("patch", sid(server, v2))
        assert [(i["key"], i["value"], i["reason"]) for i in data(got)["flags"]] == [
            ("banner", True, "TARGETING_MATCH")]
        # A change that affects both: pro's next event is this one - it never saw v2.
        v3 = await push(server, doc_with(color=color("green"), banner={
            **DOC["flags"]["banner"],
            "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "free"]]}, "on", None]}}))
        got_pro = await s_pro.next()
        id3 = sid(server, v3)
        assert (got_pro.event, got_pro.id) == ("patch", id3)
        assert [i["key"] for i in data(got_pro)["flags"]] == ["color"]
        got_free = await s_free.next()
        assert (got_free.id, [i["key"] for i in data(got_free)["flags"]]) == (id3, ["color"])
        assert s_pro.events.empty()


async def test_stream_auth_header_token_and_key_param(streams_served):
    server, client, _v1 = streams_served
    ckey = server.create_key("client")
    # no key / unknown key -> 401; client key on the rules stream -> 403
    assert (await client.get("/ofrep/v1/events")).status_code == 401
    r = await client.get("/v1/stream/rules", headers={"Authorization": f"Bearer {ckey}"})
    assert r.status_code == 403 and r.json()["errorCode"] == "FORBIDDEN"
    r = await client.get("/v1/stream/evaluated", params={"context": "%%%"},
                         headers={"Authorization": f"Bearer {ckey}"})
    assert r.status_code == 400 and r.json()["errorCode"] == "PARSE_ERROR"
    r = await client.get("/v1/stream/evaluated", params={"context": b64_context([1])},  # type: ignore[arg-type]
                         headers={"Authorization": f"Bearer {ckey}"})
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    # ?key= works on stream URLs (EventSource cannot set headers)
    async with Stream(client, f"/ofrep/v1/events?key={ckey}") as s:
        assert (await s.next(data_only=False)).id is not None
    # a forged token is refused
    assert (await client.get("/ofrep/v1/events?token=abc.def")).status_code == 401


async def test_rules_document_etag_and_304(streams_served):
    server, client, v1 = streams_served
    skey = server.create_key("server")
    auth = {"Authorization": f"Bearer {skey}"}
    r = await client.get("/v1/rules", headers=auth)
    assert r.status_code == 200
    assert set(r.json()["flags"]) == {"banner", "color"}
    etag = r.headers["etag"]
    assert etag == f'"{sid(server, v1)}"'  # the quoted state id
    assert r.headers["x-flagedge-version"] == str(v1)
    r304 = await client.get("/v1/rules", headers={**auth, "If-None-Match": etag})
    assert r304.status_code == 304 and r304.content == b""
    v2 = await push(server, doc_with(color=color("blue")))
    r2 = await client.get("/v1/rules", headers={**auth, "If-None-Match": etag})
    assert r2.status_code == 200 and r2.headers["etag"] == f'"{sid(server, v2)}"' != etag
    assert r2.headers["x-flagedge-version"] == str(v2)
    assert r2.json()["flags"]["color"]["defaultVariant"] == "blue"
    ckey = server.create_key("client")
    assert (await client.get("/v1/rules", headers={"X-API-Key": ckey})).status_code == 403


async def test_ofrep_flow_bulk_event_streams_notification_refetch(streams_served):
    server, client, _v1 = streams_served
    key = server.create_key("client")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"context": {"targetingKey": "u1", "plan": "free"}}
    bulk = await client.post("/ofrep/v1/evaluate/flags", json=body, headers=auth)
    assert bulk.status_code == 200
    etag = bulk.headers["etag"]
    values = {f["key"]: f["value"] for f in bulk.json()["flags"]}
    assert values["color"] == "red"
    stream = bulk.json()["eventStreams"][0]
    assert stream["type"] == "sse" and stream["inactivityDelaySec"] > 0
    uri = stream["endpoint"]["requestUri"]
    assert "token=" in uri and key not in uri
    async with Stream(client, uri) as events:  # no headers: as a browser's EventSource
        await events.next(data_only=False)
        v2 = await push(server, doc_with(color=color("blue")))
        note = await events.next()
        assert data(note)["type"] == "refetchEvaluation"
        refetch = await client.post(
            "/ofrep/v1/evaluate/flags", json=body,
            params={"flagConfigEtag": data(note)["etag"],
                    "flagConfigLastModified": str(data(note)["lastModified"])},
            headers={**auth, "If-None-Match": etag})
        assert refetch.status_code == 200 and refetch.headers["etag"] != etag
        assert {f["key"]: f["value"] for f in refetch.json()["flags"]}["color"] == "blue"
        assert data(note)["etag"] == note.id == sid(server, v2)
