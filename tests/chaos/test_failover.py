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

from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.storage import keys
from proxy.storage.url import sync_client
from tests.chaos.conftest import Load, Recorder, ready_state, replicated, until
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
    await replicated(writer)
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


# -- Redis Cluster: a master SIGKILLed and restarted under load ----------------------------
ENVS = ["prod", "dev", "eu", "us", "staging", "qa"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three masters, AOF on (a killed node restarts with its data and its nodes.conf)."""
    from tests.integration.test_sources_topologies import cli, cluster_port

    servers: list[RedisServer] = []
    try:
        for i in range(3):
            d = tmp_path / f"node{i}"
            servers.append(RedisServer(d, port=cluster_port(), extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", "1000"]).start())
        made = cli("--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
                   "--cluster-replicas", "0", "--cluster-yes")
        assert made.returncode == 0, made.stderr
        wait_until(lambda: all(_cluster_ok(s) for s in servers), timeout=20,
                   what="cluster state ok")
        yield servers
    finally:
        for s in servers:
            s.stop()


def _cluster_ok(server: RedisServer) -> bool:
    from tests.integration.test_sources_topologies import cli

    return b"cluster_state:ok" in cli("-p", str(server.port), "cluster", "info").stdout


def _node_of(client: Any, servers: list[RedisServer], env: str) -> RedisServer:
    from proxy.storage import layout

    node = client.get_node_from_key(layout.flags_key(env))
    return next(s for s in servers if s.port == node.port)


async def test_cluster_master_killed_and_restarted_under_load(cluster, proxy_factory, http):
    seed = cluster[0]
    writer = sync_client(seed.url, cluster=True)
    for env in ENVS:
        publisher.push(writer, env, Document.from_json(flag_doc(1)))
    # A node to kill that is not the proxy's seed, holding environments of its own.
    victim = next(s for s in cluster[1:] if any(_node_of(writer, cluster, e) is s
                                                  for e in ENVS))
    on_victim = [e for e in ENVS if _node_of(writer, cluster, e) is victim]
    elsewhere = [e for e in ENVS if e not in on_victim]
    assert on_victim and elsewhere
    keyed = {env: keys.create(writer, env, "client", "chaos")[0]
             for env in (on_victim[0], elsewhere[0])}
    writer.close()

    server = proxy_factory(redis=None, extra_args=["--redis", seed.url, "--cluster"],
                           wait="readyz")
    client = http(server)
    await until(lambda: _all_at(client, {e: 1 for e in ENVS}), 10, "every env loaded")
    loads = [Load(server.url, key, "n", workers=2, rate=25) for key in keyed.values()]
    async with loads[0], loads[1]:
        await loads[0].wait_more(20)
        victim.kill()
        await until(lambda: _degraded(client), 10, "readyz degraded while a master is down")
        for load in loads:
            mark = load.mark()
            await load.wait_more(30)
            assert not load.failures(load.since(mark))
        await asyncio.to_thread(victim.start)  # same port, AOF and nodes.conf: it rejoins
        await until(lambda: all(_cluster_ok(s) for s in cluster), 20, "cluster ok again")
        fresh = sync_client(seed.url, cluster=True)
        try:
            for env in ENVS:
                assert publisher.push(fresh, env, Document.from_json(flag_doc(2))).version == 2
        finally:
            fresh.close()
        await until(lambda: _all_at(client, {e: 2 for e in ENVS}), 10,
                    "every env followed after the node returned")
        await until(lambda: _ok(client), 5, "readyz ok")
        for load in loads:
            await until(lambda load=load: load.samples[-1].body["value"] == 2, 5,
                        "evaluations see the new value")
    for load in loads:
        assert not load.failures(), load.failures()[:3]


async def _all_at(client, wanted: dict[str, int]) -> bool:
    envs = (await ready_state(client))[1].get("envs", {})
    return all(envs.get(e) == v for e, v in wanted.items())
