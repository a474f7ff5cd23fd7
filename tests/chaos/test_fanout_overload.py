"""The fan-out under more changes than it can deliver (what bench/soak.py drives with 1,000
stalled readers and 100 changes/s): the backlog must not grow without bound. In-process,
with the real Store, FanOut and changelog; changes are published faster than the fan-out
task runs by publishing many without yielding to the loop."""

from __future__ import annotations

import pytest

from proxy.model import id_version, state_id
from proxy.store import Store
from proxy.streams.connection import StreamKind
from proxy.streams.fanout import FanOut
from proxy.streams.history import ChangeLog
from tests.unit.streams.test_fanout import Env, drain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_fanout_far_behind_skips_to_the_newest_state():
    store = Store()
    fanout = FanOut(store, ChangeLog(capacity=4096, snapshots=4), max_backlog=32)
    fanout.start()
    env = Env(store)
    first = env.push({"a": True}, reset=True)
    try:
        events = fanout.open("prod", StreamKind.EVENTS, "k1")
        rules = fanout.open("prod", StreamKind.RULES, "k2")
        await fanout.initial(events, None)
        await fanout.initial(rules, None)
        for i in range(1000):  # a burst the fan-out task never gets to run during
            newest = env.push({"a": i % 2 == 0})
        last = env.version
        # Stream ids are the state ids ("VERSION-TAG") of the sets published to the store.
        assert newest.state_id == state_id(last, newest.epoch, newest.revision)
        got_events = await drain(events, 1)
        got_rules = await drain(rules, 1)
        # One event each, at the newest version: the rules stream a full put (a snapshot),
        # the events stream one notification; nothing in between was held or sent.
        assert [f["id"] for f in got_events] == [newest.state_id]
        assert [(f["event"], f["id"]) for f in got_rules] == [("put", newest.state_id)]
        # Versions 1..1000 were queued behind the newest (1001) and skipped.
        assert fanout.stats.sse_events[("fanout", "skipped")] == last - 1
        # Later changes flow one by one again.
        after = env.push({"a": True})
        assert [f["id"] for f in await drain(rules, 1)] == [after.state_id]
        assert rules.queued == 0 and events.queued == 1  # events got its notification too
        # The change log still holds every version for resumes.
        assert len(fanout.changelog.since("prod", first.state_id, last) or []) == last - 1
    finally:
        await fanout.stop()


async def test_a_short_burst_is_delivered_change_by_change():
    store = Store()
    fanout = FanOut(store, ChangeLog(), max_backlog=32)
    fanout.start()
    env = Env(store)
    env.push({"a": True}, reset=True)
    try:
        rules = fanout.open("prod", StreamKind.RULES, "k2")
        await fanout.initial(rules, None)
        sets = [env.push({"a": i % 2 == 0}) for i in range(20)]
        got = await drain(rules, 20)
        assert [id_version(f["id"]) for f in got] == list(range(2, 22))
        assert [f["id"] for f in got] == [fs.state_id for fs in sets]
        assert {f["event"] for f in got} == {"patch"}
        assert ("fanout", "skipped") not in fanout.stats.sse_events
    finally:
        await fanout.stop()
