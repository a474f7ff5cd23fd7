"""The same layout on Redis Cluster (3 masters: environments spread over slots, one blocking
reader per stream), behind Sentinel (redis+sentinel:// URLs) and over TLS (rediss://)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.keys import KeyRing, hash_key
from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.sources.redis import RedisSource
from proxy.storage import keys, layout
from proxy.storage.url import sync_client
from proxy.store import Store
from tests.integration.source_support import stop, until
from tests.redis_server import RedisServer, free_port, redis_server_binary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid and free too."""
    while True:
        port = free_port()
        if port < 55000:
            with contextlib.suppress(OSError), socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
                return port


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    binary = Path(redis_server_binary()).with_name("redis-cli")
    return subprocess.run([str(binary), *args], capture_output=True, timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    if not Path(redis_server_binary()).with_name("redis-cli").exists():
        pytest.fail("redis-cli not found next to redis-server: cannot build a cluster")
    servers: list[RedisServer] = []
    try:
        for i in range(3):
            d = tmp_path / f"node{i}"
            servers.append(RedisServer(d, port=cluster_port(), persist=False, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", "2000"]).start())
        r = cli("--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
                "--cluster-replicas", "0", "--cluster-yes")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: all(b"cluster_state:ok" in cli("-p", str(s.port), "cluster",
                                                           "info").stdout for s in servers),
                   timeout=20, what="cluster state ok")
        yield servers
    finally:
        for s in servers:
            s.stop()


async def test_cluster_publish_and_follow(cluster):
    url = cluster[0].url
    client = sync_client(url, cluster=True)
    envs = ["prod", "dev", "eu", "us", "staging"]
    for env in envs:
        publisher.push(client, env, Document({"a": ON}))
    slots = {client.keyslot(layout.flags_key(e)) for e in envs}
    assert len(slots) > 1  # environments really live on different slots
    assert all(client.keyslot(k) == client.keyslot(layout.flags_key("eu"))
               for k in layout.env_keys("eu"))
    raw, rec = keys.create(client, "prod", "client", "web")
    store, ring = Store(), KeyRing()
    source = RedisSource(url, store, ring, cluster=True, block_ms=1000)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready, timeout=10, what="cluster load")
        assert store.envs() == sorted(envs) and ring.lookup(raw) is not None
        for env in envs:
            v = await asyncio.to_thread(publisher.push, client, env, Document({"a": OFF}))
            assert v.version == 2
        await until(lambda: all(store.get(e).version == 2 for e in envs), timeout=10, what="all followed")
        await asyncio.to_thread(publisher.push, client, "new", Document({"b": ON}))
        await until(lambda: store.get("new") is not None, timeout=10, what="new env in cluster")
        await asyncio.to_thread(keys.revoke, client, rec.id)
        await until(lambda: ring.lookup(raw) is None, timeout=1.0, what="revocation")
        state, target = publisher.state_at(client, "eu", 1)
        assert target.flags == {"a": ON} and state.version == 2
    finally:
        await stop(task)


async def test_cluster_key_writes_and_refresh(cluster):
    """On a Cluster, flagedge:keys and flagedge:events are in different slots: a key write
    and its announcement are two steps there, and the periodic re-read is the safety net."""
    url = cluster[0].url
    client = sync_client(url, cluster=True)
    assert client.keyslot(layout.KEYS) != client.keyslot(layout.EVENTS)
    publisher.push(client, "prod", Document({"a": ON}))
    raw, rec = keys.create(client, "prod", "client", "web")
    assert client.get(layout.LAYOUT) == b"1"
    store, ring = Store(), KeyRing()
    source = RedisSource(url, store, ring, cluster=True, block_ms=1000, keys_refresh=0.2)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready and ring.lookup(raw) is not None, timeout=10,
                    what="cluster load")
        other, _ = await asyncio.to_thread(keys.create, client, "prod", "server", "svc")
        await until(lambda: ring.lookup(other) is not None, timeout=5, what="announced key")
        client.hdel(layout.KEYS, hash_key(raw))  # no announcement (a lost second step)
        await until(lambda: ring.lookup(raw) is None, timeout=5, what="refresh revocation")
        assert ring.lookup(other) is not None
        assert await asyncio.to_thread(keys.revoke, client, hash_key(other)) is not None
        await until(lambda: ring.lookup(other) is None, timeout=5, what="announced revocation")
        with pytest.raises(LookupError):
            keys.revoke(client, rec.id)  # already gone
    finally:
        await stop(task)


@pytest.fixture
def sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 "
                    f"{redis_server.port} 1\nsentinel down-after-milliseconds main 5000\n")
    proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: b"main" in cli("-p", str(port), "sentinel", "masters").stdout,
                   timeout=10, what="sentinel up")
        yield f"redis+sentinel://127.0.0.1:{port}/main"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_sentinel_url_publish_and_follow(sentinel):
    client = sync_client(sentinel)
    publisher.push(client, "prod", Document({"a": ON}))
    store = Store()
    source = RedisSource(sentinel, store, KeyRing(), block_ms=1000)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready, timeout=10, what="sentinel load")
        assert store.get("prod").version == 1
        await asyncio.to_thread(publisher.push, client, "prod", Document({"a": OFF}))
        await until(lambda: store.get("prod").version == 2, what="followed via sentinel")
    finally:
        await stop(task)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server speaking only TLS (self-signed certificate made with openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", str(key), "-out", str(cert), "-days", "1",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                          capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--tls-port", str(port),
                             "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        wait_until(lambda: _pings(url), timeout=10, what="TLS redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(sync_client(url).ping())
    except Exception:
        return False


async def test_tls_url_publish_and_follow(tls_redis):
    from tests.integration.test_cli_publish import flagedge

    doc = Path(tls_redis.split("ssl_ca_certs=")[1]).with_name("flags.json")
    doc.write_text('{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, '
                   '"defaultVariant": "on"}}}')
    pushed = await asyncio.to_thread(flagedge, "push", str(doc), "--env", "prod", url=tls_redis)
    assert pushed.returncode == 0, pushed.stderr
    store = Store()
    source = RedisSource(tls_redis, store, KeyRing(), block_ms=1000)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready, timeout=10, what="TLS load")
        assert store.get("prod").version == 1
        await asyncio.to_thread(publisher.push, sync_client(tls_redis), "prod",
                                Document({"a": OFF}))
        await until(lambda: store.get("prod").version == 2, what="followed over TLS")
    finally:
        await stop(task)
    plain = sync_client(tls_redis.replace("rediss://", "redis://").split("?")[0])
    with pytest.raises(RedisConnectionError):  # plain text does not work on the TLS port
        plain.ping()
