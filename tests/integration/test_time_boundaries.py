"""Time boundaries end to end (DESIGN §10, issue 23): a rule comparing $flagd.timestamp with
a literal time flips with no write; a real `flagedge serve` on a real Redis serves the new
value in bulk OFREP with a new ETag, and tells the events stream (refetchEvaluation) and the
evaluated stream (a patch), never before the boundary (their spread within the jitter is
checked in process: tests/unit/streams/test_boundaries.py); literal thresholds are cached,
other reads of the clock are not."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.integration.streams_support import (
    Stream,
    b64_context,
    data,
    metric,
    push,
    until_told,
    vid,
)

pytestmark = pytest.mark.integration

BULK = "/ofrep/v1/evaluate/flags"


def stepped(condition: Any) -> dict[str, Any]:
    return {"flags": {
        "timed": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "b",
                  "targeting": {"if": [condition, "a", "b"]}},
        "plain": {"state": "ENABLED", "variants": {"on": True, "off": False},
                  "defaultVariant": "on"}}}


def before(at: int) -> dict[str, Any]:
    return stepped({"<": [{"var": "$flagd.timestamp"}, at]})


async def bulk(client: httpx.AsyncClient, key: str, etag: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if etag is not None:
        headers["If-None-Match"] = etag
    return await client.post(BULK, json={"context": {"targetingKey": "u1"}}, headers=headers)


def timed_value(r: httpx.Response) -> Any:
    return {f["key"]: f.get("value") for f in r.json()["flags"]}["timed"]


async def cache_lookups(client: httpx.AsyncClient) -> tuple[float, float]:
    text = (await client.get("/metrics")).text
    return (metric(text, "flagedge_result_cache_lookups_total", outcome="hit"),
            metric(text, "flagedge_result_cache_lookups_total", outcome="bypass"))


async def test_a_boundary_flips_bulk_etag_and_streams_with_no_write(proxy_server):
    server = proxy_server
    boundary = int(time.time()) + 5  # room for the push, the key and the streams to open
    version = await push(server, before(boundary))
    key = server.create_key("client")
    ctx = b64_context({"targetingKey": "u1"})
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) \
            as client, \
            Stream(client, "/ofrep/v1/events", key=key) as events, \
            Stream(client, "/v1/stream/evaluated", key=key, params={"context": ctx}) as ev:
        opened = await events.next(data_only=False)
        put = await ev.next()
        first = await bulk(client, key)
        assert time.time() < boundary, "the machine was too slow to see the first interval"
        assert opened.id.endswith("~0") and put.id == opened.id
        assert {i["key"]: i["value"] for i in data(put)["flags"]}["timed"] == "a"
        assert first.status_code == 200 and timed_value(first) == "a"
        etag = first.headers["etag"]
        assert (await bulk(client, key, etag)).status_code == 304

        refetch = await events.next(timeout=until_told(boundary))
        assert time.time() >= boundary  # never before it
        assert refetch.event == "message" and data(refetch)["type"] == "refetchEvaluation"
        assert refetch.id == data(refetch)["etag"] and refetch.id.endswith("~1")
        assert vid(refetch) == version and vid(opened) == version  # no write made it change
        patch = await ev.next(timeout=until_told(boundary))
        assert patch.event == "patch" and patch.id == refetch.id
        assert [(i["key"], i["value"]) for i in data(patch)["flags"]] == [("timed", "b")]

        after = await bulk(client, key, etag)
        assert after.status_code == 200 and timed_value(after) == "b"
        assert after.headers["etag"] != etag
        # the OFREP re-fetch with the notification's etag answers at once, same result
        again = await client.post(BULK, params={"flagConfigEtag": refetch.id},
                                  json={"context": {"targetingKey": "u1"}},
                                  headers={"Authorization": f"Bearer {key}"})
        assert again.headers["etag"] == after.headers["etag"]


async def test_literal_thresholds_are_cached_and_other_clock_reads_are_not(proxy_server):
    server = proxy_server
    await push(server, before(int(time.time()) + 3600))
    key = server.create_key("client")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        hits, bypassed = await cache_lookups(client)
        for _ in range(3):
            assert timed_value(await bulk(client, key)) == "a"
        hits2, bypassed2 = await cache_lookups(client)
        assert hits2 >= hits + 2 and bypassed2 == bypassed

        await push(server, stepped({"<": [{"var": "$flagd.timestamp"}, {"var": "until"}]}))
        for _ in range(3):
            assert timed_value(await bulk(client, key)) == "b"
        hits3, bypassed3 = await cache_lookups(client)
        assert hits3 == hits2 and bypassed3 == bypassed2 + 3
