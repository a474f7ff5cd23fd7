"""Change log: the in-memory ring per environment, and replay from the Redis change stream."""

from __future__ import annotations

import pytest

from proxy.model import Change, Flag, FlagSet, FlagState, VariantType
from proxy.storage import changes
from proxy.streams.history import ChangeLog, entry_from_record, fetch_from_redis


def flag(key: str, default: str = "on") -> Flag:
    raw = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default}
    return Flag(key=key, state=FlagState.ENABLED, variants={"on": True, "off": False},
                variant_type=VariantType.BOOLEAN, default_variant=default, metadata={}, raw=raw)


def record(log: ChangeLog, version: int, upserted=(), deleted=(), reset=False, epoch="e1",
           evaluators_changed=False) -> FlagSet:
    fs = FlagSet(flags={k: flag(k) for k in upserted}, version=version, epoch=epoch,
                 updated_at=1000.0 + version, evaluators={"x": {"==": [1, 1]}})
    log.record(Change(env="prod", version=version, upserted=frozenset(upserted),
                      deleted=frozenset(deleted), reset=reset,
                      evaluators_changed=evaluators_changed), fs)
    return fs


def test_since_returns_contiguous_entries_with_payloads():
    log = ChangeLog(capacity=10)
    record(log, 1, ["a"], reset=True)
    record(log, 2, ["b"])
    record(log, 3, [], deleted=["a"])
    record(log, 4, ["c"], evaluators_changed=True)
    entries = log.since("prod", 1, 4)
    assert [e.version for e in entries] == [2, 3, 4]
    assert entries[0].upserted["b"]["defaultVariant"] == "on"
    assert entries[1].deleted == ("a",) and not entries[1].upserted
    assert entries[2].evaluators == {"x": {"==": [1, 1]}} and entries[0].evaluators is None
    assert entries[0].at == 1002.0
    assert log.since("prod", 4, 4) == []
    assert log.since("prod", 0, 4)[0].reset


def test_since_is_none_when_the_ring_does_not_reach():
    log = ChangeLog(capacity=3)
    for v in range(1, 8):
        record(log, v, ["a"])
    assert log.oldest("prod") == 5
    assert log.since("prod", 3, 7) is None  # needs 4, evicted
    assert [e.version for e in log.since("prod", 4, 7)] == [5, 6, 7]
    assert log.since("other", 1, 2) is None
    assert log.since("prod", 5, 9) is None  # the ring has not seen 8, 9


def test_gap_in_versions_is_not_replayed():
    log = ChangeLog()
    record(log, 1, ["a"])
    record(log, 5, ["a"], reset=True)  # a resync jumped versions
    assert log.since("prod", 1, 5) is None
    assert log.since("prod", 0, 1) is not None


def test_versions_going_backwards_forget_the_old_history():
    log = ChangeLog()
    for v in range(1, 6):
        record(log, v, ["a"])
    record(log, 1, ["b"], reset=True, epoch="e2")  # new epoch after data loss
    assert log.oldest("prod") == 1
    assert log.since("prod", 0, 1)[0].epoch == "e2"
    assert log.snapshot("prod", 3) is None


def test_snapshots_are_kept_for_the_newest_versions_only():
    log = ChangeLog(capacity=100, snapshots=2)
    sets = [record(log, v, ["a"]) for v in range(1, 5)]
    assert log.snapshot("prod", 4) is sets[3]
    assert log.snapshot("prod", 3) is sets[2]
    assert log.snapshot("prod", 2) is None


def test_entry_from_redis_fields():
    e = entry_from_record(changes.parse(b"1-0", {b"version": b"7", b"epoch": b"ep", b"op": b"upsert",
                          b"before": b'{"flags":{"a":{"x":1},"b":null}}',
                          b"after": b'{"flags":{"a":null,"b":{"y":2}},"$evaluators":{"e":1}}',
                          b"at": b"1700000000.250000"}))
    assert e is not None
    assert e.version == 7 and e.epoch == "ep" and e.at == 1700000000.25
    assert e.upserted == {"b": {"y": 2}} and e.deleted == ("a",)
    assert e.evaluators == {"e": 1} and e.metadata is None


def test_an_unreadable_record_is_never_replayed():
    bad = changes.parse(b"1-0", {b"version": b"7", b"before": b"{", b"after": b"{}"})
    assert entry_from_record(bad) is None
    assert entry_from_record(changes.parse(b"1-0", {b"after": b"{}"})) is None  # no version


def _doc(n: int, extra: dict | None = None) -> dict:
    flags = {f"f{i}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on" if (i + n) % 2 else "off"} for i in range(3)}
    flags.update(extra or {})
    return {"flags": flags}


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
    try:
        entries = await fetch_from_redis(client, changes_key("prod"), 2, 6)
        assert [e.version for e in entries] == [3, 4, 5, 6]
        assert "g" in entries[1].upserted and entries[2].deleted == ("g",)
        assert all(e.at > 1.6e9 for e in entries)
        assert [e.version for e in await fetch_from_redis(client, changes_key("prod"), 0, 6)] \
            == [1, 2, 3, 4, 5, 6]
        assert await fetch_from_redis(client, changes_key("prod"), 6, 6) == []
        # a version this stream never had, or another epoch: cannot replay
        assert await fetch_from_redis(client, changes_key("prod"), 2, 9) is None
        epoch = entries[0].epoch
        assert await fetch_from_redis(client, changes_key("prod"), 2, 6, epoch + "x") is None
        # trimmed: versions 1..4 gone -> replay from 2 impossible, from 4 fine
        first_kept = sync.xrange(changes_key("prod"))[4][0]
        assert sync.xtrim(changes_key("prod"), minid=first_kept, approximate=False) == 4
        assert await fetch_from_redis(client, changes_key("prod"), 2, 6) is None
        assert [e.version for e in await fetch_from_redis(client, changes_key("prod"), 4, 6)] \
            == [5, 6]
    finally:
        await client.aclose()
        sync.close()


@pytest.mark.integration
async def test_history_rebuilds_an_old_version_from_the_before_side(redis_server):
    import redis
    import redis.asyncio as aredis

    from proxy.evaluation.documents import compile_document
    from proxy.release.changeset import Document
    from proxy.release.publisher import push
    from proxy.streams.history import RedisHistory

    docs = [
        {"flags": {"a": {"state": "ENABLED", "variants": {"on": True, "off": False},
                         "defaultVariant": "on", "targeting": {"$ref": "is_pro"}}},
         "$evaluators": {"is_pro": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}}},
        _doc(1),
        {**_doc(2), "$evaluators": {"x": {"==": [1, 1]}}, "metadata": {"team": "web"}},
        _doc(3, {"g": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"}}),
    ]
    sync = redis.Redis.from_url(redis_server.url)
    for doc in docs:  # versions 1..4
        push(sync, "prod", Document.from_json(doc), author="t")
    client = aredis.Redis.from_url(redis_server.url)
    try:
        history = RedisHistory(client)
        current = compile_document(docs[-1], version=4, epoch=sync.hget(
            "flagedge:{prod}:meta", "epoch").decode())
        for version in (1, 2, 3):
            old = await history.flag_set_at("prod", current, version)
            assert old is not None and old.version == version
            want = compile_document(docs[version - 1], version=version).to_document()
            assert old.to_document() == want, version
        # the same question again is answered from the cache, even with Redis gone
        await client.aclose()
        redis_server.stop()
        assert (await history.flag_set_at("prod", current, 2)).to_document() == \
            compile_document(docs[1]).to_document()
    finally:
        await client.aclose()
        sync.close()
