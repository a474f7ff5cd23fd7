"""Sentinel failover mid-run, end to end: a master, a replica and a sentinel (real processes
started here), a real `flagedge serve` on a redis+sentinel:// URL under evaluation load with
an open rules stream. The master is SIGKILLed, the sentinel promotes the replica, and the
proxy must follow it: no failed evaluation, and a push made after the failover is applied.

tests/integration/test_sources_topologies.py covers publish-and-follow through Sentinel and
Cluster without faults; this adds the failover.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy import keys, publisher
from proxy.changeset import Document
from proxy.redisurl import sync_client
from tests.chaos.conftest import Load, Recorder, ready_state, until
from tests.integration.streams_support import Stream
from tests.redis_server import RedisServer, free_port, redis_server_binary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "chaos"


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def sentinel(self, *args: str) -> Any:
        c = redis.Redis(port=self.sentinel_port, socket_timeout=5)
        try:
            return c.execute_command("SENTINEL", *args)
        finally:
            c.close()

    def master_port(self) -> int:
        return int(self.sentinel("get-master-addr-by-name", SERVICE)[1])


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", extra_args=[
        "--replicaof", "127.0.0.1", str(master.port)]).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # sentinel rewrites its file: one of its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n")
    proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = SentinelSet(master, replica, port)
    try:
        wait_until(lambda: _replica_known(s), timeout=20, interval=0.1,
                   what="sentinel sees master and replica")
        yield s
    finally:
        proc.terminate()
        proc.wait(10)
        replica.stop()
        master.stop()


def _replica_known(s: SentinelSet) -> bool:
    c = redis.Redis(port=s.sentinel_port, socket_timeout=2)
    try:
        info = c.info("sentinel")
    except redis.RedisError:
        return False
    finally:
        c.close()
    master = info.get("master0", {})
    return master.get("status") == "ok" and int(master.get("slaves", 0)) >= 1


def flag_doc(n: int) -> dict[str, Any]:
    return {"flags": {"n": {"state": "ENABLED", "variants": {"current": n, "other": -1},
                            "defaultVariant": "current"}}}


def push_when_possible(url: str, doc: dict[str, Any], timeout: float) -> int:
    """Push through the sentinel URL, retrying while there is no writable master."""
    deadline = time.monotonic() + timeout
    while True:
        client = sync_client(url, socket_timeout=2, socket_connect_timeout=1)
        try:
            return publisher.push(client, "test", Document.from_json(doc), author="chaos").version
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # retry pacing while the sentinel elects a new master
        finally:
            client.close()


async def test_sentinel_failover_mid_run(sentinel_set, proxy_factory, http):
    s = sentinel_set
    writer = sync_client(s.url)
    v1 = publisher.push(writer, "test", Document.from_json(flag_doc(1))).version
    raw, _ = keys.create(writer, "test", "client", "chaos")
    skey, _ = keys.create(writer, "test", "server", "chaos")
    # Both copies hold everything before the master dies (replication is asynchronous).
    assert writer.execute_command("WAIT", 1, 5000) == 1
    writer.close()

    server = proxy_factory(redis=None, extra_args=["--redis", s.url], wait="readyz")
    client = http(server)
    old_master = s.master_port()
    assert old_master == s.master.port
    async with Load(server.url, raw, "n", workers=4, rate=25) as load, \
            Stream(client, "/v1/stream/rules", key=skey) as rules:
        rec = Recorder(rules)
        await rec.drain_until(v1)
        await load.wait_more(40)

        s.master.kill()
        await until(lambda: _degraded(client), 5, "readyz degraded after the master died")
        await until(lambda: s.master_port() == s.replica.port, 20, "replica promoted")
        v2 = await asyncio.to_thread(push_when_possible, s.url, flag_doc(2), 10)
        assert v2 == v1 + 1  # the promoted replica had every write
        await until(lambda: load.samples[-1].body["value"] == 2, 10,
                    "the push after the failover reaches evaluations")
        ids = await rec.drain_until(v2)
        assert ids == [v1, v2], ids
        await until(lambda: _ok(client), 5, "readyz ok on the new master")
        mark = load.mark()
        await load.wait_more(20)
        assert {x.body["value"] for x in load.since(mark)} == {2}

    failures = load.failures()
    assert not failures, failures[:3]
    assert len(load.samples) > 100
    assert "redis connected" in server.logs()


async def _degraded(client) -> bool:
    return (await ready_state(client))[1].get("status") == "degraded"


async def _ok(client) -> bool:
    return (await ready_state(client))[1].get("status") == "ok"
