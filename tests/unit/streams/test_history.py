"""Change log: the in-memory ring per environment, and replay from the Redis change stream."""

from __future__ import annotations

import asyncio

import pytest

from proxy.model import Change, Flag, FlagSet, FlagState, VariantType, state_id
from proxy.storage import changes
from proxy.streams.history import ChangeLog, RedisHistory, entry_from_record, fetch_from_redis


def flag(key: str, default: str = "on") -> Flag:
    raw = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default}
    return Flag(key=key, state=FlagState.ENABLED, variants={"on": True, "off": False},
                variant_type=VariantType.BOOLEAN, default_variant=default, metadata={}, raw=raw)


def revision(version: int, epoch: str = "e1") -> str:
    """A Redis change-log entry id for the write of ``version`` (per epoch: a re-publish
    writes new entries)."""
    return f"{1_700_000_000_000 + version}-{0 if epoch == 'e1' else 1}"


def record(log: ChangeLog, version: int, upserted=(), deleted=(), reset=False, epoch="e1",
           evaluators_changed=False, rev: str | None = None) -> FlagSet:
    fs = FlagSet(flags={k: flag(k) for k in upserted}, version=version, epoch=epoch,
                 updated_at=1000.0 + version, evaluators={"x": {"==": [1, 1]}},
                 revision=revision(version, epoch) if rev is None else rev)
    log.record(Change(env="prod", version=version, upserted=frozenset(upserted),
                      deleted=frozenset(deleted), reset=reset,
                      evaluators_changed=evaluators_changed), fs)
    return fs


def test_since_returns_contiguous_entries_with_payloads():
    log = ChangeLog(capacity=10)
    sets = {1: record(log, 1, ["a"], reset=True), 2: record(log, 2, ["b"]),
            3: record(log, 3, [], deleted=["a"]),
            4: record(log, 4, ["c"], evaluators_changed=True)}
    entries = log.since("prod", sets[1].state_id, 4)
    assert [e.version for e in entries] == [2, 3, 4]
    assert [e.state_id for e in entries] == [sets[v].state_id for v in (2, 3, 4)]
    assert entries[0].upserted["b"]["defaultVariant"] == "on"
    assert entries[1].deleted == ("a",) and not entries[1].upserted
    assert entries[2].evaluators == {"x": {"==": [1, 1]}} and entries[0].evaluators is None
    assert entries[0].at == 1002.0
    assert [e.version for e in log.since("prod", sets[2].state_id, 3)] == [3]
    assert log.since("prod", sets[4].state_id, 4) == []
    # A client that holds nothing of this ring (version 0 was never a state here): None.
    assert log.since("prod", "0", 4) is None


def test_since_is_none_when_the_ring_does_not_reach():
    log = ChangeLog(capacity=3)
    sets = {v: record(log, v, ["a"]) for v in range(1, 8)}
    assert log.oldest("prod") == 5
    assert log.since("prod", sets[3].state_id, 7) is None  # needs 4, evicted
    # The held state itself must still be in the ring: only its id tells it from another
    # epoch's or write's version 4.
    assert log.since("prod", sets[4].state_id, 7) is None
    assert [e.version for e in log.since("prod", sets[5].state_id, 7)] == [6, 7]
    assert log.since("other", sets[1].state_id, 2) is None
    assert log.since("prod", sets[5].state_id, 9) is None  # the ring has not seen 8, 9


def test_gap_in_versions_is_not_replayed():
    log = ChangeLog()
    one = record(log, 1, ["a"])
    five = record(log, 5, ["a"], reset=True)  # a resync jumped versions
    assert log.since("prod", one.state_id, 5) is None
    assert log.since("prod", five.state_id, 5) == []


def test_versions_going_backwards_forget_the_old_history():
    log = ChangeLog()
    old = {v: record(log, v, ["a"]) for v in range(1, 6)}
    new = record(log, 1, ["b"], reset=True, epoch="e2")  # new epoch after data loss
    assert log.oldest("prod") == 1
    assert new.state_id != old[1].state_id
    assert log.since("prod", new.state_id, 1) == []
    assert log.since("prod", old[1].state_id, 1) is None  # e1's version 1 is another state
    assert log.snapshot("prod", new.state_id) is new
    assert log.snapshot("prod", old[1].state_id) is None
    assert log.snapshot("prod", old[3].state_id) is None


def test_snapshots_are_kept_for_the_newest_versions_only():
    log = ChangeLog(capacity=100, snapshots=2)
    sets = [record(log, v, ["a"]) for v in range(1, 5)]
    assert log.snapshot("prod", sets[3].state_id) is sets[3]
    assert log.snapshot("prod", sets[2].state_id) is sets[2]
    assert log.snapshot("prod", sets[1].state_id) is None


def test_a_held_id_whose_tag_differs_is_not_a_state_of_the_ring():
    """Another epoch's or another write's version 2, a bare number as older servers sent,
    garbage: neither replayed from nor diffed against, though the ring holds version 2."""
    log = ChangeLog()
    sets = {v: record(log, v, ["a"]) for v in range(1, 5)}
    other_write = FlagSet(flags={}, version=2, epoch="e1", revision="1699999999999-0")
    other_epoch = FlagSet(flags={}, version=2, epoch="e0", revision=sets[2].revision)
    for held in (other_write.state_id, other_epoch.state_id, "2", "2-", "2-zzzzzzzz",
                 "garbage", ""):
        assert log.since("prod", held, 4) is None, held
        assert log.snapshot("prod", held) is None, held
    current = FlagSet(flags={}, version=4, epoch="e1", revision="another").state_id
    assert log.since("prod", current, 4) is None  # the current number, another state
    assert log.snapshot("prod", current) is None
    # the genuine ids of the same versions still resume
    assert [e.version for e in log.since("prod", sets[2].state_id, 4)] == [3, 4]
    assert log.snapshot("prod", sets[2].state_id) is sets[2]


def test_a_reset_to_the_same_version_forgets_the_state_it_replaces():
    """After a failover to a lagging replica, Redis's version 3 is another write: the ring
    drops the old one so nobody resumes from it."""
    log = ChangeLog()
    old = {v: record(log, v, ["a"]) for v in range(1, 4)}
    new = record(log, 3, ["b"], reset=True, rev="1700000009999-0")
    assert new.state_id != old[3].state_id
    assert log.since("prod", old[3].state_id, 3) is None
    assert log.since("prod", old[2].state_id, 3) is None
    assert log.snapshot("prod", old[3].state_id) is None
    assert log.since("prod", new.state_id, 3) == []
    assert log.snapshot("prod", new.state_id) is new


def test_entry_from_redis_fields():
    e = entry_from_record(changes.parse(b"1-0", {b"version": b"7", b"epoch": b"ep", b"op": b"upsert",
                          b"before": b'{"flags":{"a":{"x":1},"b":null}}',
                          b"after": b'{"flags":{"a":null,"b":{"y":2}},"$evaluators":{"e":1}}',
                          b"at": b"1700000000.250000"}))
    assert e is not None
    assert e.version == 7 and e.epoch == "ep" and e.at == 1700000000.25
    assert e.upserted == {"b": {"y": 2}} and e.deleted == ("a",)
    assert e.evaluators == {"e": 1} and e.metadata is None
    # the state it leads to: what the source publishes for that write (revision = entry id)
    assert e.state_id == state_id(7, "ep", "1-0")
    assert e.state_id == FlagSet(flags={}, version=7, epoch="ep", revision="1-0").state_id


def test_an_unreadable_record_is_never_replayed():
    bad = changes.parse(b"1-0", {b"version": b"7", b"before": b"{", b"after": b"{}"})
    assert entry_from_record(bad) is None
    assert entry_from_record(changes.parse(b"1-0", {b"after": b"{}"})) is None  # no version


def _doc(n: int, extra: dict | None = None) -> dict:
    flags = {f"f{i}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on" if (i + n) % 2 else "off"} for i in range(3)}
    flags.update(extra or {})
    return {"flags": flags}


def held_ids(sync, key: str) -> dict[int, str]:
    """The state id of each version in the change stream ``key``, as the source publishes
    it (revision = the entry's id)."""
    out = {}
    for entry_id, fields in sync.xrange(key):
        version = int(fields[b"version"])
        out[version] = state_id(version, fields[b"epoch"].decode(), entry_id.decode())
    return out


@pytest.mark.integration
async def test_fetch_from_redis_replays_exactly_the_missing_versions(redis_server):
    import redis
    import redis.asyncio as aredis

    from proxy.release.changeset import Document
    from proxy.release.publisher import push
    from proxy.storage.layout import changes_key

    sync = redis.Redis.from_url(redis_server.url)
    for n in range(6):  # versions 1..6; version 4 adds g, version 5 removes it
        extra = {"g": {"state": "ENABLED", "variants": {"a": "x"}, "defaultVariant": "a"}} \
            if n == 3 else None
        push(sync, "prod", Document.from_json(_doc(n, extra)), author="t")
    client = aredis.Redis.from_url(redis_server.url)
    key = changes_key("prod")
    held = held_ids(sync, key)
    assert sorted(held) == [1, 2, 3, 4, 5, 6]
    try:
        entries = await fetch_from_redis(client, key, held[2], 6)
        assert [e.version for e in entries] == [3, 4, 5, 6]
        assert [e.state_id for e in entries] == [held[v] for v in (3, 4, 5, 6)]
        assert "g" in entries[1].upserted and entries[2].deleted == ("g",)
        assert all(e.at > 1.6e9 for e in entries)
        assert [e.version for e in await fetch_from_redis(client, key, held[1], 6)] \
            == [2, 3, 4, 5, 6]
        # "0" (nothing held) or a bare number (an older server's id): no such state here
        assert await fetch_from_redis(client, key, "0", 6) is None
        assert await fetch_from_redis(client, key, "2", 6) is None
        # the current state is the caller's to answer (nothing to replay)
        assert await fetch_from_redis(client, key, held[6], 6) is None
        # a version this stream never had, or another epoch: cannot replay
        assert await fetch_from_redis(client, key, held[2], 9) is None
        epoch = entries[0].epoch
        assert await fetch_from_redis(client, key, held[2], 6, epoch + "x") is None
        # trimmed: versions 1..4 gone -> replay from 2 impossible, and from 4 too: the entry
        # of the held state is needed to tell it from another write of that number
        first_kept = sync.xrange(key)[4][0]
        assert sync.xtrim(key, minid=first_kept, approximate=False) == 4
        assert await fetch_from_redis(client, key, held[2], 6) is None
        assert await fetch_from_redis(client, key, held[4], 6) is None
        assert [e.version for e in await fetch_from_redis(client, key, held[5], 6)] == [6]
    finally:
        await client.aclose()
        sync.close()


@pytest.mark.integration
async def test_fetch_from_redis_refuses_a_held_id_of_another_write(redis_server):
    """The stream's entry at the held version is another write than the client saw (a
    failover to a lagging replica lost the one it saw, and Redis's version 2 is new
    content), or another epoch's: None, so the caller sends a fresh put."""
    import redis
    import redis.asyncio as aredis

    from proxy.release.changeset import Document
    from proxy.release.publisher import push
    from proxy.storage.layout import changes_key

    sync = redis.Redis.from_url(redis_server.url)
    for n in range(4):  # versions 1..4
        push(sync, "prod", Document.from_json(_doc(n)), author="t")
    client = aredis.Redis.from_url(redis_server.url)
    key = changes_key("prod")
    held = held_ids(sync, key)
    ids = [entry_id.decode() for entry_id, _ in sync.xrange(key)]
    epoch = sync.xrange(key)[0][1][b"epoch"].decode()
    try:
        assert [e.version for e in await fetch_from_redis(client, key, held[2], 4)] == [3, 4]
        lost_write = state_id(2, epoch, "1-0")  # a version 2 this Redis never wrote
        assert await fetch_from_redis(client, key, lost_write, 4) is None
        assert await fetch_from_redis(client, key, state_id(2, epoch, ids[2]), 4) is None
        assert await fetch_from_redis(client, key, state_id(2, "old-epoch", ids[1]), 4) is None
    finally:
        await client.aclose()
        sync.close()


@pytest.mark.integration
async def test_history_reads_are_bounded_in_depth_and_in_number(redis_server, monkeypatch):
    """A resume further back than REDIS_MAX_ENTRIES, or one arriving while REDIS_READS walks
    run, is a put (None), not a longer walk or a queue of them."""
    import redis
    import redis.asyncio as aredis

    from proxy.release.changeset import Document
    from proxy.release.publisher import push
    from proxy.storage.layout import changes_key
    from proxy.streams import history as module

    sync = redis.Redis.from_url(redis_server.url)
    for n in range(6):
        push(sync, "prod", Document.from_json(_doc(n)), author="t")
    held = held_ids(sync, changes_key("prod"))
    client = aredis.Redis.from_url(redis_server.url)
    try:
        monkeypatch.setattr(module, "REDIS_MAX_ENTRIES", 3)
        key = changes_key("prod")
        assert [e.version for e in await fetch_from_redis(client, key, held[3], 6)] == [4, 5, 6]
        assert await fetch_from_redis(client, key, held[2], 6) is None  # 4 back: too deep
        history = RedisHistory(client, reads=1)
        first = asyncio.ensure_future(history.entries("prod", held[4], 6, ""))
        await asyncio.sleep(0)  # one turn of the loop: its walk is now under way
        assert await history.entries("prod", held[5], 6, "") is None  # busy: a put
        assert [e.version for e in await first] == [5, 6]
        assert [e.version for e in await history.entries("prod", held[5], 6, "")] == [6]
    finally:
        await client.aclose()
        sync.close()
