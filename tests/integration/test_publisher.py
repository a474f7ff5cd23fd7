"""The write side against a real redis-server: atomic pushes, conflicts, history, rollback,
export stability, stream cap, env deletion."""

from __future__ import annotations

import threading

import orjson
import pytest
import redis

from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.storage import layout

pytestmark = pytest.mark.integration

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


@pytest.fixture
def client(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def test_push_writes_only_changes_with_before_after_in_one_entry(client):
    r1 = publisher.push(client, "prod", Document({"a": ON, "b": ON}), author="ann",
                        message="first")
    assert (r1.status, r1.version) == ("ok", 1)
    r2 = publisher.push(client, "prod", Document({"a": OFF, "c": ON}), author="bob",
                        message="second")
    assert r2.version == 2 and r2.epoch == r1.epoch
    entries = publisher.history(client, "prod")
    assert [e.version for e in entries] == [2, 1]
    e = entries[0]
    assert (e.author, e.message, e.op) == ("bob", "second", "replace")
    assert e.before["flags"] == {"a": ON, "b": ON, "c": None}
    assert e.after["flags"] == {"a": OFF, "b": None, "c": ON}
    assert e.at > 0
    assert client.smembers(layout.ENVS) == {b"prod"}
    meta = client.hgetall(layout.meta_key("prod"))
    assert meta[b"version"] == b"2" and meta[b"updated_by"] == b"bob"
    # Same document again: nothing written, no version, no entry.
    r3 = publisher.push(client, "prod", Document({"a": OFF, "c": ON}))
    assert (r3.status, r3.version) == ("noop", 2)
    assert client.xlen(layout.changes_key("prod")) == 2


def test_concurrent_expect_version_writes_exactly_one_wins(client):
    publisher.push(client, "prod", Document({"a": ON}))
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        c = redis.Redis(connection_pool=client.connection_pool)
        _state, plan = publisher.diff(c, "prod", Document({"a": ON, f"f{i}": ON}))
        barrier.wait()  # everyone has read version 1 before anyone writes
        try:
            publisher.write(c, "prod", plan, expect_version=1)
            result = "ok"
        except publisher.ConflictError as exc:
            assert exc.actual == 2
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["conflict"] * (n - 1) + ["ok"]
    state = publisher.read_state(client, "prod")
    assert state.version == 2 and len(state.raw_flags) == 2


def test_history_and_rollback_round_trip(client):
    docs = [Document({"a": ON}), Document({"a": OFF, "b": ON}, evaluators={"e": {"==": [1, 1]}}),
            Document({"b": OFF}, metadata={"team": "x"}), Document({"c": ON})]
    exports = []
    for d in docs:
        publisher.push(client, "prod", d)
        exports.append(publisher.export(client, "prod"))
    result = publisher.rollback(client, "prod", 2, author="ops")
    assert result.version == 5
    assert publisher.export(client, "prod") == exports[1]
    newest = publisher.history(client, "prod", limit=1)[0]
    assert newest.message == "rollback to version 2" and newest.author == "ops"
    publisher.rollback(client, "prod", 3)
    assert publisher.export(client, "prod") == exports[2]
    publisher.rollback(client, "prod", 0)
    assert publisher.read_state(client, "prod").raw_flags == {}
    assert publisher.rollback(client, "prod", 6).version == 8  # back to a rollback
    assert publisher.export(client, "prod") == exports[2]


def test_rollback_beyond_the_capped_log_is_a_clear_error(client):
    for i in range(5):
        publisher.push(client, "prod", Document({"a": ON if i % 2 else OFF, f"f{i}": ON}))
    client.xtrim(layout.changes_key("prod"), maxlen=2, approximate=False)
    assert publisher.rollback(client, "prod", 3).version == 6  # still reachable
    with pytest.raises(publisher.HistoryTooShort, match="only reaches back to version"):
        publisher.rollback(client, "prod", 1)
    with pytest.raises(LookupError, match=r"versions 0\.\.6"):
        publisher.rollback(client, "prod", 9)


def test_export_is_byte_stable_and_round_trips(client, tmp_path):
    doc = {"metadata": {"z": 1, "a": "x"}, "flags": {"b": {"variants": {"y": 2, "x": 1},
           "state": "ENABLED", "defaultVariant": "x", "targeting": {}}, "a": ON}}
    publisher.push(client, "prod", Document.from_json(doc))
    first = publisher.export(client, "prod")
    assert first == publisher.export(client, "prod")
    assert first.endswith(b"\n")
    parsed = orjson.loads(first)
    assert parsed["$schema"].startswith("https://flagd.dev/schema")
    assert list(parsed) == sorted(parsed)
    path = tmp_path / "exported.json"
    path.write_bytes(first)
    again = publisher.parse_document(first, source=str(path))
    assert publisher.push(client, "prod", again).status == "noop"
    with pytest.raises(LookupError, match="does not exist"):
        publisher.export(client, "nope")


def test_change_stream_is_capped(client):
    plan_docs = [Document({"a": ON if i % 2 else OFF}) for i in range(300)]
    for d in plan_docs:
        _s, plan = publisher.diff(client, "prod", d)
        publisher.write(client, "prod", plan, maxlen=10)
    assert publisher.read_state(client, "prod").version == 300
    assert client.xlen(layout.changes_key("prod")) < 300  # approximate trim (~, whole nodes)


def test_delete_env_removes_data_and_announces(client):
    publisher.push(client, "prod", Document({"a": ON}))
    publisher.push(client, "dev", Document({"a": ON}))
    assert [e["env"] for e in publisher.list_envs(client)] == ["dev", "prod"]
    assert publisher.delete_env(client, "prod") == 1
    assert not client.exists(*layout.env_keys("prod"))
    assert [e["env"] for e in publisher.list_envs(client)] == ["dev"]
    last = client.xrevrange(layout.EVENTS, count=1)[0][1]
    assert last == {b"type": b"env", b"op": b"deleted", b"env": b"prod"}


def test_bad_environment_names_are_refused(client):
    for bad in ("", "a{b}", "x" * 65, "has space"):
        with pytest.raises(ValueError, match="invalid environment name"):
            publisher.read_state(client, bad)


def test_garbage_stored_by_another_tool_can_be_pushed_over_but_not_exported(client):
    publisher.push(client, "prod", Document({"a": ON, "b": ON}))
    client.hset(layout.flags_key("prod"), "a", b"{not json")
    with pytest.raises(publisher.InvalidDocument, match=r"flags\.a: stored JSON is invalid"):
        publisher.export(client, "prod")
    _state, plan = publisher.diff(client, "prod", Document({"a": ON, "b": ON}))
    assert set(plan.changed) == {"a"} and not plan.added and not plan.removed
    result = publisher.write(client, "prod", plan)
    assert result.version == 2
    assert orjson.loads(client.hget(layout.flags_key("prod"), "a")) == ON
    newest = publisher.history(client, "prod", limit=1)[0]
    assert newest.before is None and newest.flags == ["a"]  # listed, marked unreadable
    with pytest.raises(publisher.HistoryTooShort, match="entry of version 2 is unreadable"):
        publisher.rollback(client, "prod", 1)


def test_rollback_refuses_rules_that_no_longer_validate(client):
    publisher.push(client, "prod", Document({"a": ON}))
    bad = {**ON, "defaultVariant": "missing"}
    _s, plan = publisher.diff(client, "prod", Document({"a": bad}))
    publisher.write(client, "prod", plan)  # a foreign tool wrote an invalid flag at v2
    publisher.push(client, "prod", Document({"a": ON}))
    with pytest.raises(publisher.InvalidDocument, match=r"prod version 2: flags\.a"):
        publisher.rollback(client, "prod", 2)
    assert publisher.read_state(client, "prod").version == 3


def test_awkward_flag_keys_survive_the_lua_json_building(client):
    awkward = ['quote"d', "back\\slash", "ключ", "slash/x", "tab\tkey", "emoji-🚀"]
    publisher.push(client, "prod", Document({k: ON for k in awkward}))
    publisher.push(client, "prod", Document({k: OFF for k in awkward[:3]}))
    newest = publisher.history(client, "prod", limit=1)[0]
    assert newest.after["flags"] == {**{k: OFF for k in awkward[:3]},
                                     **{k: None for k in awkward[3:]}}
    publisher.rollback(client, "prod", 1)
    assert orjson.loads(publisher.export(client, "prod"))["flags"] == {k: ON for k in awkward}
