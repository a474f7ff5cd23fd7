"""``--wait-replicas N`` (Redis WAIT) on every write command: a real primary and a real
replica (redis-server --replicaof), the CLI as users run it. Exit 7: written on the primary,
but fewer than N replicas acknowledged it in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from proxy.model import canonical
from proxy.storage import layout
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOT_REPLICATED = 8  # proxy.commands._common.NOT_REPLICATED, as scripts see it

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


def flagedge(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env.update(FLAGEDGE_REDIS_URL=url, FLAGEDGE_AUTHOR="ci")
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def doc_file(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(doc))
    return str(path)


@pytest.fixture
def replica(redis_server, tmp_path) -> Iterator[RedisServer]:
    """A real replica of ``redis_server``, in sync before the test starts."""
    primary = redis.Redis.from_url(redis_server.url)
    primary.config_set("repl-diskless-sync-delay", 0)  # the default waits 5 s for more replicas
    server = RedisServer(tmp_path / "replica", persist=False,
                         extra_args=["--replicaof", "127.0.0.1", str(redis_server.port)])
    server.start()
    wait_until(lambda: primary.info("replication")["connected_slaves"] == 1
               and redis.Redis.from_url(server.url).info("replication")
               ["master_link_status"] == "up", timeout=20, what="replica in sync")
    try:
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_wait_replicas_met_then_short(redis_server, replica, tmp_path):
    url = redis_server.url
    on = doc_file(tmp_path, "on.json", {"flags": {"a": ON}})
    off = doc_file(tmp_path, "off.json", {"flags": {"a": OFF}})
    done = flagedge("push", on, "--env", "prod", "--wait-replicas", "1", url=url)
    assert done.returncode == 0, done.stderr
    # WAIT returned: the replica has applied the write, no polling needed.
    assert redis.Redis.from_url(replica.url).hget(layout.meta_key("prod"), "version") == b"1"

    short = flagedge("push", off, "--env", "prod", "--wait-replicas", "2",
                     "--wait-timeout", "200", url=url)
    assert short.returncode == NOT_REPLICATED, short.stderr
    assert "1 of 2 replicas" in short.stderr
    assert "written" in short.stderr
    assert "pushed prod version 2" in short.stdout
    primary = redis.Redis.from_url(url)
    assert primary.hget(layout.flags_key("prod"), "a") == canonical(OFF)  # the write stays


def test_wait_replicas_covers_the_write_itself(redis_server, replica, tmp_path):
    """A stopped replica is still connected but acknowledges nothing new: the command must
    count acknowledgements of this write (Redis WAIT), not connected replicas."""
    url = redis_server.url
    on = doc_file(tmp_path, "on.json", {"flags": {"a": ON}})
    assert flagedge("push", on, "--env", "prod", url=url).returncode == 0
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        off = doc_file(tmp_path, "off.json", {"flags": {"a": OFF}})
        short = flagedge("push", off, "--env", "prod", "--wait-replicas", "1",
                         "--wait-timeout", "300", url=url)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    assert short.returncode == NOT_REPLICATED, short.stderr
    assert "0 of 1 replicas" in short.stderr
    assert redis.Redis.from_url(url).hget(layout.meta_key("prod"), "version") == b"2"


def test_every_write_command_takes_wait_replicas(redis_server, replica, tmp_path):
    url = redis_server.url
    r = redis.Redis.from_url(replica.url)
    v1 = doc_file(tmp_path, "v1.json", {"flags": {"a": ON}})
    v2 = doc_file(tmp_path, "v2.json", {"flags": {"a": OFF}})
    w = ["--wait-replicas", "1"]
    assert flagedge("push", v1, "--env", "prod", *w, url=url).returncode == 0
    assert flagedge("push", v2, "--env", "prod", *w, url=url).returncode == 0
    done = flagedge("rollback", "--env", "prod", "--to", "1", *w, url=url)
    assert done.returncode == 0, done.stderr
    assert r.hget(layout.meta_key("prod"), "version") == b"3"
    created = flagedge("keys", "create", "--env", "prod", "--kind", "server", "--name", "x",
                       "--json", *w, url=url)
    assert created.returncode == 0, created.stderr
    key_id = orjson.loads(created.stdout)["id"]
    assert r.hlen(layout.KEYS) == 1
    short = flagedge("keys", "revoke", key_id, "--wait-replicas", "2", "--wait-timeout", "100",
                     url=url)
    assert short.returncode == NOT_REPLICATED, short.stderr
    assert redis.Redis.from_url(url).hlen(layout.KEYS) == 0
    done = flagedge("envs", "delete", "prod", "--yes", *w, url=url)
    assert done.returncode == 0, done.stderr
    assert r.exists(layout.meta_key("prod")) == 0


def test_wait_replicas_is_refused_with_cluster(tmp_path):
    v1 = doc_file(tmp_path, "v1.json", {"flags": {"a": ON}})
    done = flagedge("push", v1, "--env", "prod", "--cluster", "--wait-replicas", "1",
                    url="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert "--wait-replicas" in done.stderr and "cluster" in done.stderr.lower()
