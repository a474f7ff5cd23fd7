"""Every write is all or nothing at any size (issue 20): 20,000 deletions or upserts in one
push are one version and one change entry, and a write whose script fails leaves nothing
behind. Real redis-server."""

from __future__ import annotations

import orjson
import pytest
import redis

from proxy.model import canonical
from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.storage import layout

pytestmark = pytest.mark.integration
N = 20_000

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


@pytest.fixture
def client(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def seed(client: redis.Redis, env: str, n: int) -> dict[bytes, bytes]:
    """Version 1 of ``env`` with ``n`` flags f00000.. (written straight to Redis, so these
    tests do not depend on the write path they test)."""
    raw = orjson.dumps(ON)
    flags = {f"f{i:05d}".encode(): raw for i in range(n)}
    client.hset(layout.flags_key(env), mapping=flags)
    client.hset(layout.meta_key(env), mapping={"version": 1, "epoch": "e1",
                                               "metadata": b'{"team":"a"}'})
    client.sadd(layout.ENVS, env)
    return flags


def snapshot(client: redis.Redis, env: str) -> tuple[dict, dict, int]:
    return (client.hgetall(layout.flags_key(env)), client.hgetall(layout.meta_key(env)),
            client.xlen(layout.changes_key(env)) if client.type(layout.changes_key(env))
            == b"stream" else -1)


def test_push_deleting_20000_flags_is_one_version(client):
    seed(client, "prod", N + 1)
    result = publisher.push(client, "prod", Document({"f00000": ON}, metadata={"team": "a"}),
                            author="ann", message="prune")
    assert (result.status, result.version) == ("ok", 2)
    assert client.hgetall(layout.flags_key("prod")) == {b"f00000": orjson.dumps(ON)}
    [entry] = publisher.history(client, "prod")
    assert (entry.version, entry.op, entry.author, entry.message) == (2, "delete", "ann", "prune")
    assert len(entry.after["flags"]) == N
    assert set(entry.after["flags"].values()) == {None}
    assert entry.before["flags"]["f20000"] == ON
    assert client.hget(layout.meta_key("prod"), "version") == b"2"


def test_push_upserting_20000_flags_is_one_version(client):
    flags = {f"g{i:05d}": (ON if i % 2 else OFF) for i in range(N)}
    result = publisher.push(client, "big", Document(flags), author="ann")
    assert (result.status, result.version) == ("ok", 1)
    stored = client.hgetall(layout.flags_key("big"))
    assert stored == {k.encode(): canonical(v) for k, v in flags.items()}
    [entry] = publisher.history(client, "big")
    assert (entry.version, entry.op) == (1, "upsert")
    assert entry.after["flags"] == flags
    # Change every one of them again: 20,000 updates of existing fields.
    flipped = {k: (OFF if v is ON else ON) for k, v in flags.items()}
    assert publisher.push(client, "big", Document(flipped)).version == 2
    assert client.hgetall(layout.flags_key("big")) == {
        k.encode(): canonical(v) for k, v in flipped.items()}
    assert client.xlen(layout.changes_key("big")) == 2


@pytest.mark.parametrize("breakage", ["changes-not-a-stream", "version-not-an-integer"])
def test_a_failing_write_writes_nothing(client, breakage):
    """The script fails (a key another tool broke), and the large push that failed leaves
    flags, metadata and history exactly as they were: it checks everything before its
    first write. (Before the fix the metadata was written first, then 20,000 deletions
    failed in ``unpack`` or the XADD/HINCRBY failed after every flag was written.)"""
    seed(client, "prod", N + 1)
    _state, plan = publisher.diff(client, "prod",
                                  Document({"f00000": OFF, "new": ON}, metadata={"team": "b"}))
    assert len(plan.removed) == N
    if breakage == "changes-not-a-stream":
        client.set(layout.changes_key("prod"), "not a stream")
    else:
        client.hset(layout.meta_key("prod"), "version", "one")
    before = snapshot(client, "prod")
    with pytest.raises(redis.ResponseError):
        publisher.write(client, "prod", plan, author="ann")
    assert snapshot(client, "prod") == before


def test_write_refuses_a_bad_maxlen_before_writing(client):
    seed(client, "prod", 3)
    before = snapshot(client, "prod")
    _state, plan = publisher.diff(client, "prod", Document({"f00000": OFF}))
    with pytest.raises(redis.ResponseError, match="maxlen"):
        publisher.write(client, "prod", plan, maxlen=-1)
    assert snapshot(client, "prod") == before
