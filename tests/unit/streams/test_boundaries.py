"""Time boundaries on the streams (proxy.streams.boundaries): at each boundary of the rules
the events stream gets a refetchEvaluation and the evaluated stream its patches, within the
jitter, with no write; ids name the interval; a write re-plans the one timer per env."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.model import Change, FlagSet
from proxy.store import Store
from proxy.streams.connection import Connection, StreamKind
from proxy.streams.fanout import FanOut
from proxy.streams.history import ChangeLog
from tests.unit.streams.test_fanout import frames
from tests.waiting import until

ENV = "prod"
JITTER = 0.3


def stepped(at: int, *, other: str = "red") -> dict[str, Any]:
    """``timed`` is "a" before ``at``, "b" from it on; ``plain`` reads no clock."""
    return {"flags": {
        "timed": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "b",
                  "targeting": {"if": [{"<": [{"var": "$flagd.timestamp"}, at]}, "a", "b"]}},
        "plain": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
                  "defaultVariant": other}}}


def publish(store: Store, doc: dict[str, Any], version: int) -> FlagSet:
    fs = compile_document(doc, version=version, epoch="e1", updated_at=1000.0 + version)
    store.publish(ENV, fs, Change(env=ENV, version=version, reset=True,
                                  upserted=frozenset(fs.flags), written_at=time.time()))
    return fs


@pytest.fixture
async def streams():
    store = Store()
    fanout = FanOut(store, ChangeLog(), boundary_jitter=JITTER)
    fanout.start()
    yield store, fanout
    await fanout.stop()


async def next_frames(conn: Connection, timeout: float) -> list[dict[str, str]]:
    async with asyncio.timeout(timeout):
        item = await conn.next()
    assert item is not None
    return frames(item[0])


async def test_a_boundary_sends_a_refetch_and_the_patches_with_no_write(streams):
    store, fanout = streams
    boundary = int(time.time()) + 3
    fs = publish(store, stepped(boundary), 1)
    await until(lambda: ENV in fanout._boundary_tasks, what="the boundary timer")
    events = fanout.open(ENV, StreamKind.EVENTS, "k")
    evaluated = fanout.open(ENV, StreamKind.EVALUATED, "k", {"targetingKey": "u"})
    assert frames(await fanout.initial(events, None)) == [{"id": f"{fs.state_id}~0"}]
    put = frames(await fanout.initial(evaluated, None))
    assert put[0]["event"] == "put" and put[0]["id"] == f"{fs.state_id}~0"
    values = {i["key"]: i["value"] for i in orjson.loads(put[0]["data"])["flags"]}
    assert values == {"timed": "a", "plain": "red"}

    refetch = await next_frames(events, timeout=boundary - time.time() + JITTER + 1)
    assert time.time() >= boundary
    assert refetch[0]["id"] == f"{fs.state_id}~1"
    assert orjson.loads(refetch[0]["data"])["type"] == "refetchEvaluation"
    patch = await next_frames(evaluated, timeout=JITTER + 1)
    assert patch[0]["event"] == "patch" and patch[0]["id"] == f"{fs.state_id}~1"
    assert orjson.loads(patch[0]["data"])["flags"] == [
        {"key": "timed", "value": "b", "variant": "b", "reason": "TARGETING_MATCH",
         "metadata": {}}]
    assert store.get(ENV) is fs  # no write
    # past its last boundary, the env has no timer
    await until(lambda: ENV not in fanout._boundary_tasks
                or fanout._boundary_tasks[ENV].done(), what="the timer to end")


async def test_a_write_replans_the_timer_and_past_boundaries_need_none(streams):
    store, fanout = streams
    publish(store, stepped(int(time.time()) + 3600), 1)
    await until(lambda: ENV in fanout._boundary_tasks, what="the boundary timer")
    first = fanout._boundary_tasks[ENV]
    publish(store, stepped(int(time.time()) + 7200), 2)
    await until(lambda: first.done(), what="the old timer to be cancelled")
    assert not fanout._boundary_tasks[ENV].done()
    publish(store, stepped(int(time.time()) - 10), 3)  # its only boundary is past
    assert ENV not in fanout._boundary_tasks


async def test_resume_across_a_boundary_gets_a_fresh_put_or_refetch(streams):
    store, fanout = streams
    fs = publish(store, stepped(int(time.time()) - 10), 1)  # now in interval 1
    current, earlier = f"{fs.state_id}~1", f"{fs.state_id}~0"
    ev = fanout.open(ENV, StreamKind.EVALUATED, "k", {"targetingKey": "u"})
    assert await fanout.initial(ev, current) == b""
    ev2 = fanout.open(ENV, StreamKind.EVALUATED, "k", {"targetingKey": "u"})
    put = frames(await fanout.initial(ev2, earlier))
    assert put[0]["event"] == "put" and put[0]["id"] == current
    events = fanout.open(ENV, StreamKind.EVENTS, "k")
    assert await fanout.initial(events, current) == b""
    events2 = fanout.open(ENV, StreamKind.EVENTS, "k")
    refetch = frames(await fanout.initial(events2, earlier))
    assert refetch[0]["id"] == current
    assert orjson.loads(refetch[0]["data"])["etag"] == current
    # a plain state id of this state (held before the rules gained boundaries)
    events3 = fanout.open(ENV, StreamKind.EVENTS, "k")
    assert frames(await fanout.initial(events3, fs.state_id))[0]["id"] == current


async def test_a_change_tells_the_interval_and_every_timed_flag(streams):
    """A write while a client holds an earlier interval's results: its patch covers the
    timed flags too, under the new state's current interval."""
    store, fanout = streams
    publish(store, stepped(int(time.time()) + 3600), 1)
    conn = fanout.open(ENV, StreamKind.EVALUATED, "k", {"targetingKey": "u"})
    await fanout.initial(conn, None)
    fs2 = compile_document(stepped(int(time.time()) - 10, other="blue"), version=2,
                           epoch="e1", updated_at=1002.0)
    store.publish(ENV, fs2, Change(env=ENV, version=2, upserted=frozenset({"plain"}),
                                   written_at=time.time()))
    got = await next_frames(conn, timeout=2)
    assert got[0]["id"] == f"{fs2.state_id}~1"
    keys = {i["key"]: i["value"] for i in orjson.loads(got[0]["data"])["flags"]}
    assert keys == {"plain": "blue", "timed": "b"}
