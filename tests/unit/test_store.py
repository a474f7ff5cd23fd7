"""The store swaps immutable snapshots and tells subscribers what changed."""

from __future__ import annotations

import asyncio

import pytest

from proxy.model import Change, FlagSet
from proxy.store import Store


def snapshot(version: int) -> FlagSet:
    return FlagSet(flags={}, version=version, epoch="e1")


def test_get_returns_the_published_snapshot_and_ready_follows():
    store = Store()
    assert store.get("prod") is None and not store.ready
    first = snapshot(1)
    store.publish("prod", first, Change(env="prod", version=1, reset=True))
    assert store.get("prod") is first and store.ready
    second = snapshot(2)
    store.publish("prod", second, Change(env="prod", version=2, upserted=frozenset({"a"})))
    assert store.get("prod") is second
    assert first.version == 1  # the old snapshot a reader may still hold is untouched
    assert store.envs() == ["prod"]


def test_subscribers_see_every_change_even_if_one_fails():
    store = Store()
    seen: list[tuple[int, int]] = []

    def broken(change, flag_set):
        raise RuntimeError("boom")

    store.subscribe(broken)
    unsubscribe = store.subscribe(lambda c, fs: seen.append((c.version, fs.version)))
    store.publish("dev", snapshot(1), Change(env="dev", version=1))
    store.publish("dev", snapshot(2), Change(env="dev", version=2))
    unsubscribe()
    store.publish("dev", snapshot(3), Change(env="dev", version=3))
    assert seen == [(1, 1), (2, 2)]


def test_remove_notifies_a_reset_deleting_every_flag():
    from proxy.model import Flag, FlagState, VariantType

    flag = Flag(key="a", state=FlagState.ENABLED, variants={"on": True}, variant_type=VariantType.BOOLEAN,
                default_variant="on", metadata={}, raw={})
    store = Store()
    store.publish("dev", FlagSet(flags={"a": flag}, version=4), Change(env="dev", version=4))
    changes: list[Change] = []
    store.subscribe(lambda c, fs: changes.append(c))
    store.remove("dev")
    assert store.get("dev") is None
    assert changes[0].reset and changes[0].deleted == {"a"} and changes[0].version == 5


def test_status_reports_degraded_sources():
    store = Store()
    store.set_status("prod", connected=False, degraded_reason="redis unreachable", error="refused")
    assert store.degraded() == {"prod": "redis unreachable"}
    store.set_status("prod", connected=True)
    assert store.degraded() == {}
    assert store.status["prod"].last_error == "refused"


@pytest.mark.asyncio
async def test_wait_for_version_wakes_on_publish_and_times_out_otherwise():
    store = Store()
    store.publish("prod", snapshot(1), Change(env="prod", version=1))
    assert await store.wait_for_version("prod", 1, timeout=0.01)  # already there
    waiter = asyncio.create_task(store.wait_for_version("prod", 3, timeout=5))
    await asyncio.sleep(0)
    store.publish("prod", snapshot(2), Change(env="prod", version=2))
    await asyncio.sleep(0)
    assert not waiter.done()  # version 2 is not enough
    store.publish("prod", snapshot(3), Change(env="prod", version=3))
    assert await asyncio.wait_for(waiter, 1)
    assert not await store.wait_for_version("prod", 9, timeout=0.01)
    assert store._waiters["prod"] == []  # no leaked waiters


def written(version: int, revision: str) -> FlagSet:
    return FlagSet(flags={}, version=version, epoch="e1", revision=revision)


async def caught_up(store: Store, state_id: str, publish: FlagSet | None) -> bool:
    """Whether ``catch_up`` waited for ``publish`` (published while it waits) to return."""
    waiter = asyncio.create_task(store.catch_up("prod", state_id, timeout=5))
    await asyncio.sleep(0)
    if waiter.done():
        return False  # it did not wait
    assert publish is not None, "waited for a state it should not wait for"
    store.publish("prod", publish, Change(env="prod", version=publish.version))
    await asyncio.wait_for(waiter, 1)
    return True


@pytest.mark.asyncio
async def test_catch_up_waits_for_a_state_a_faster_replica_served():
    store = Store()
    store.publish("prod", written(2, "r2"), Change(env="prod", version=2))
    ahead = written(3, "r3")
    assert await caught_up(store, ahead.state_id, ahead)  # a newer version
    assert await caught_up(store, f"{written(4, 'r4').state_id}~1", written(4, "r4"))  # timed
    other = written(4, "failover")  # another write of the version we hold
    assert await caught_up(store, other.state_id, other)
    first = written(1, "r1")
    assert await caught_up(Store(), first.state_id, first)  # no rules here yet


@pytest.mark.asyncio
async def test_catch_up_returns_at_once_for_states_it_cannot_reach_or_holds():
    store = Store()
    current = written(100, "r100")
    store.publish("prod", written(99, "r99"), Change(env="prod", version=99))
    store.publish("prod", current, Change(env="prod", version=100))
    for held in (current.state_id, f"{current.state_id}~2",  # what it serves
                 written(99, "r99").state_id,  # served here before
                 "100", "99",  # a bare number (older servers): no state to compare
                 written(10, "old").state_id,  # older than the states remembered
                 "not-an-id"):
        assert not await caught_up(store, held, None), held
    assert store._waiters.get("prod", []) == []
    # Restarted: version 99 was served by the process before this one, which alone could
    # tell whether a state of it is another write; a resuming client must not wait.
    restarted = Store()
    restarted.publish("prod", current, Change(env="prod", version=100, reset=True))
    assert not await caught_up(restarted, written(99, "r99").state_id, None)
    assert not await caught_up(restarted, written(98, "r98").state_id, None)
