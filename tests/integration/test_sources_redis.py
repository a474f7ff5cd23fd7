"""RedisSource against a real redis-server: load, follow, gaps, faults, bad data, bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from proxy.keys import KeyRing
from proxy.model import Change
from proxy.release import publisher
from proxy.release.changeset import Document, Plan
from proxy.sources.redis import RedisSource
from proxy.storage import layout
from proxy.store import Store
from tests.integration.source_support import stop, until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


@dataclass
class Running:
    source: RedisSource
    store: Store
    keyring: KeyRing
    changes: list[Change]
    client: redis.Redis

    def version(self, env: str = "prod") -> int:
        fs = self.store.get(env)
        return fs.version if fs else -1

    def push(self, doc: dict[str, Any], env: str = "prod") -> int:
        return publisher.push(self.client, env, Document.from_json(doc), author="t").version


@contextlib.asynccontextmanager
async def running(url: str, client: redis.Redis, **kwargs: Any) -> AsyncIterator[Running]:
    store, keyring = Store(), KeyRing()
    changes: list[Change] = []
    store.subscribe(lambda change, _fs: changes.append(change))
    source = RedisSource(url, store, keyring, block_ms=1000, backoff_cap=0.3, **kwargs)
    task = asyncio.create_task(source.run())
    try:
        yield Running(source, store, keyring, changes, client)
    finally:
        await stop(task)
        await source.close()


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


async def test_push_reaches_the_store_with_write_time(redis_server, client):
    publisher.push(client, "prod", Document({"a": ON}))
    async with running(redis_server.url, client) as r:
        await asyncio.wait_for(r.source.settled.wait(), 10)
        # Settled means loaded (the server opens its port then): rules and keys are in.
        assert r.source.ready and r.source.connected
        assert r.version() == 1 and set(r.store.get("prod").flags) == {"a"}
        v = await asyncio.to_thread(r.push, {"flags": {"a": OFF, "b": ON}})
        await until(lambda: r.version() == v, what="push applied")
        fs = r.store.get("prod")
        assert fs.flags["a"].default_variant == "off" and set(fs.flags) == {"a", "b"}
        last = r.changes[-1]
        assert last.version == v and last.upserted == {"a", "b"} and not last.reset
        assert last.written_at is not None and 0 <= last.applied_at - last.written_at < 2
        v = await asyncio.to_thread(r.push, {"flags": {"b": ON}})
        await until(lambda: r.version() == v, what="delete applied")
        assert r.changes[-1].deleted == {"a"} and set(r.store.get("prod").flags) == {"b"}
        assert r.store.status["*"].connected and not r.store.degraded()


async def test_new_environment_is_followed_and_deleted_one_removed(redis_server, client):
    async with running(redis_server.url, client) as r:
        await until(lambda: r.source.ready)
        assert r.store.envs() == []
        await asyncio.to_thread(r.push, {"flags": {"x": ON}}, "staging")
        await until(lambda: r.version("staging") == 1, what="new env loaded")
        v = await asyncio.to_thread(r.push, {"flags": {"x": OFF}}, "staging")
        await until(lambda: r.version("staging") == v, what="new env followed")
        await asyncio.to_thread(publisher.delete_env, client, "staging")
        await until(lambda: r.store.get("staging") is None, what="env removed")


async def test_version_gap_triggers_full_reload(redis_server, client, caplog):
    publisher.push(client, "prod", Document({"a": ON}))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.source.ready)
        # Another writer bumps the version without a change entry: the next entry is local+2.
        client.hset(layout.flags_key("prod"), "b", orjson.dumps(OFF))
        client.hincrby(layout.meta_key("prod"), "version", 1)
        with caplog.at_level(logging.INFO, logger="flagedge.sources.redis"):
            v = await asyncio.to_thread(r.push, {"flags": {"a": OFF, "b": OFF}})
            assert v == 3
            await until(lambda: r.version() == 3, what="reload after gap")
        assert "gap env=prod local=1 entry=3" in caplog.text
        assert r.changes[-1].reset
        fs = r.store.get("prod")
        assert fs.flags["a"].default_variant == "off" and fs.flags["b"].default_variant == "off"


async def test_trimmed_stream_triggers_full_reload(redis_server, client, caplog):
    publisher.push(client, "prod", Document({"a": ON}))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.source.ready)
        # Three pushes and a trim while the event loop (hence the source) is busy: whether or
        # not its blocked XREAD was answered with v2 already, v3 is gone and v4 is a gap.
        for doc in ({"a": OFF}, {"a": ON, "b": ON}, {"a": OFF, "c": ON}):
            publisher.push(client, "prod", Document(doc))
        client.xtrim(layout.changes_key("prod"), maxlen=1, approximate=False)
        with caplog.at_level(logging.INFO, logger="flagedge.sources.redis"):
            await until(lambda: r.version() == 4, what="reload after trim")
        assert "entry=4" in caplog.text and "full reload" in caplog.text
        assert set(r.store.get("prod").flags) == {"a", "c"}


async def test_redis_killed_serves_stale_then_resyncs(redis_server, client):
    publisher.push(client, "prod", Document({"a": ON}))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.source.ready)
        redis_server.kill()
        await until(lambda: not r.source.connected, what="disconnect noticed")
        assert r.version() == 1  # stale rules still served
        assert "redis unreachable" in r.store.degraded()["*"]
        assert "serving version 1" in r.store.degraded()["prod"]
        redis_server.restart()  # with its data (AOF)
        v = await asyncio.to_thread(r.push, {"flags": {"a": OFF}})
        await until(lambda: r.version() == v, timeout=10, what="resync after restart")
        await until(lambda: not r.store.degraded(), what="degraded cleared")
        assert r.store.get("prod").flags["a"].default_variant == "off"


async def test_redis_back_empty_keeps_last_good_until_republished(redis_server, client):
    publisher.push(client, "prod", Document({"a": ON}))
    publisher.push(client, "prod", Document({"a": ON, "b": ON}))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.version() == 2)
        rejected = r.store.rejected_total
        redis_server.restart(empty=True)
        await until(lambda: "no data" in r.store.degraded().get("prod", ""), timeout=10,
                    what="empty redis reported")
        assert r.version() == 2 and set(r.store.get("prod").flags) == {"a", "b"}
        assert r.store.rejected_total == rejected
        # An operator re-publishes: a new epoch, version 1, is adopted.
        await asyncio.to_thread(r.push, {"flags": {"c": ON}})
        await until(lambda: "c" in r.store.get("prod").flags, what="new epoch adopted")
        assert r.version() == 1 and "prod" not in r.store.degraded()


async def test_older_version_same_epoch_is_not_adopted(redis_server, client):
    for doc in ({"a": ON}, {"a": OFF}, {"a": ON, "b": ON}):
        publisher.push(client, "prod", Document(doc))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.version() == 3)
        client.hset(layout.meta_key("prod"), "version", 1)  # as if restored from an old backup
        await r.source.resync()
        await until(lambda: "older than the served 3" in r.store.degraded().get("prod", ""),
                    what="older version reported")
        v = await asyncio.to_thread(r.push, {"flags": {"a": OFF}})
        assert v == 2
        await until(lambda: r.source._last["prod"] == _last_id(client), what="entry seen")
        assert r.version() == 3 and set(r.store.get("prod").flags) == {"a", "b"}
        v = await asyncio.to_thread(r.push, {"flags": {"z": OFF}})
        assert v == 3  # same version number as served, different content: adopted
        await until(lambda: "z" in r.store.get("prod").flags, what="caught up: adopted")
        assert set(r.store.get("prod").flags) == {"z"} and r.version() == 3
        assert not r.store.degraded()


def _last_id(client: redis.Redis) -> str:
    return client.xrevrange(layout.changes_key("prod"), count=1)[0][0].decode()


async def test_invalid_flag_written_by_another_tool_is_rejected_alone(redis_server, client,
                                                                      caplog):
    publisher.push(client, "prod", Document({"a": ON, "b": ON}))
    async with running(redis_server.url, client) as r:
        await until(lambda: r.version() == 1)
        bad = {**ON, "state": "MAYBE"}
        plan = Plan(added={"c": ON}, changed={"a": (ON, bad)}, removed={})
        with caplog.at_level(logging.ERROR, logger="flagedge.sources"):
            publisher.write(client, "prod", plan)  # bypasses validation, like a foreign tool
            await until(lambda: r.version() == 2, what="change applied")
        fs = r.store.get("prod")
        assert set(fs.flags) == {"a", "b", "c"}
        assert fs.flags["a"].raw == ON  # last good version kept
        assert r.store.rejected_total == 1
        assert "rejected env=prod version=2 flag=a path=flags.a" in caplog.text
        # Not even JSON: the change entry itself is unreadable -> full reload, still alone.
        client.hset(layout.flags_key("prod"), "b", b"{not json")
        client.hincrby(layout.meta_key("prod"), "version", 1)
        await r.source.resync()
        await until(lambda: r.store.rejected_total == 3, what="reload rejections")
        fs = r.store.get("prod")
        assert fs.flags["a"].raw == ON and fs.flags["b"].raw == ON and "c" in fs.flags
        assert fs.version == 3 and set(fs.rejected) == {"a", "b"}
        # A new flag without a good version is served as the error flagd gives for it.
        plan = Plan(added={"d": {**ON, "targeting": {"invalid": []}}}, changed={}, removed={})
        publisher.write(client, "prod", plan)
        await until(lambda: r.version() == 4, what="bad new flag applied")
        fs = r.store.get("prod")
        assert fs.flags["d"].static_result.error_code.value == "PARSE_ERROR"
        assert set(fs.rejected) == {"a", "b", "d"} and fs.flags["c"].raw == ON


async def test_key_ring_follows_create_and_revoke(redis_server, client):
    from proxy.storage import keys

    raw_old, _ = keys.create(client, "prod", "server", "before-start")
    async with running(redis_server.url, client) as r:
        await until(lambda: r.source.ready)
        assert r.keyring.lookup(raw_old).kind == "server"
        raw, rec = keys.create(client, "prod", "client", "web", rate_limit=5)
        await until(lambda: r.keyring.lookup(raw), what="new key known")
        assert r.keyring.lookup(raw).rate_limit == 5.0
        revoked = []
        r.keyring.subscribe(revoked.append)
        t0 = time.monotonic()
        keys.revoke(client, rec.id)
        await until(lambda: r.keyring.lookup(raw) is None, timeout=1.0, what="revocation")
        assert time.monotonic() - t0 < 1.0 and revoked[0].id == rec.id
        assert r.source.secret == client.get(layout.SECRET)


async def test_bootstrap_file_serves_until_redis_answers(tmp_path):
    boot = tmp_path / "boot.json"
    boot.write_bytes(orjson.dumps({"flags": {"boot": ON}}))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    async with running(url, client, bootstrap=boot, env="prod") as r:
        # Redis refuses: settled at once, with the bootstrap file already served.
        await asyncio.wait_for(r.source.settled.wait(), 10)
        assert r.source.ready and not r.source.connected
        assert set(r.store.get("prod").flags) == {"boot"} and r.version() == 0
        assert "bootstrap" in r.store.degraded()["prod"]
        server = RedisServer(tmp_path / "redis", port=port).start()
        try:
            await asyncio.to_thread(publisher.push, client, "prod", Document({"real": ON}))
            await until(lambda: r.version() == 1, timeout=10, what="redis adopted")
            assert set(r.store.get("prod").flags) == {"real"} and not r.store.degraded()
        finally:
            server.stop()


async def test_bad_bootstrap_file_is_reported_not_served(tmp_path, caplog):
    boot = tmp_path / "boot.json"
    boot.write_bytes(b'{"flags": {"x": {"state": "MAYBE"}')  # no flag document at all
    url = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.ERROR):
        async with running(url, redis.Redis.from_url(url), bootstrap=boot, env="prod") as r:
            await until(lambda: r.store.rejected_total >= 1, what="bootstrap rejected")
            assert not r.source.ready and r.store.get("prod") is None
    assert f"file={boot}" in caplog.text and "invalid JSON" in caplog.text


async def test_bootstrap_file_with_a_bad_flag_serves_the_others(tmp_path, caplog):
    boot = tmp_path / "boot.json"
    boot.write_bytes(orjson.dumps({"flags": {"x": {"state": "MAYBE"}, "ok": ON}}))
    url = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.ERROR):
        async with running(url, redis.Redis.from_url(url), bootstrap=boot, env="prod") as r:
            await until(lambda: r.source.ready, what="bootstrap served")
            fs = r.store.get("prod")
            assert set(fs.flags) == {"x", "ok"} and set(fs.rejected) == {"x"}
            assert fs.flags["x"].static_result.error_code.value == "PARSE_ERROR"
    assert f"file={boot}" in caplog.text and "flag=x path=flags.x.state" in caplog.text



async def test_unix_socket_url(tmp_path):
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "unix", persist=False,
                         extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]).start()
    try:
        url = f"unix://{sock}?db=0"
        client = redis.Redis.from_url(url)
        publisher.push(client, "prod", Document({"a": ON}))
        async with running(url, client) as r:
            await until(lambda: r.version() == 1, what="load over unix socket")
            v = await asyncio.to_thread(r.push, {"flags": {"a": OFF}})
            await until(lambda: r.version() == v, what="follow over unix socket")
    finally:
        server.stop()


async def test_source_stops_on_cancel_even_mid_command(redis_server, client):
    """redis-py (8.x, asyncio) sometimes swallows a cancellation that lands while a command
    is in flight; the source must stop anyway or the app's shutdown hangs. Cancel it over and
    over at moments when it is busy loading."""
    for i in range(40):
        publisher.push(client, f"e{i}", Document({"a": ON}))
    for attempt in range(8):
        store = Store()
        source = RedisSource(redis_server.url, store, KeyRing(), block_ms=1000)
        task = asyncio.create_task(source.run())
        await until(lambda s=store, n=attempt: len(s.envs()) > n * 4, what="loading")
        await stop(task, timeout=5)
        await source.close()
