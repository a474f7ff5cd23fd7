"""Redis restarted empty under several replicas, some with several workers (issue 20).

The first process to reconnect recreates ``flagedge:secret``; every other process must still
see that Redis lost its data (the secret's value changed) and keep its known keys and last
good rules instead of taking the empty ``flagedge:keys`` as a mass revocation (a 401 is fatal
to the OFREP web provider).
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from proxy.release import publisher
from proxy.storage import keys
from tests.redis_server import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = (2, 2, 1)  # three replicas: five processes, each with its own Redis source
HITS = 40  # fresh connections per replica: both workers of a --workers 2 replica take some


def doc(n: int) -> dict:
    return {"flags": {"n": {"state": "ENABLED", "variants": {"current": n, "other": -1},
                            "defaultVariant": "current"}}}


def evaluate(server, key: str) -> httpx.Response:
    # httpx.post opens a new connection each time, so the kernel hands it to either worker.
    return httpx.post(f"{server.url}/ofrep/v1/evaluate/flags/n", json={},
                      headers={"Authorization": f"Bearer {key}"}, timeout=5.0)


def readyz(server) -> dict:
    return httpx.get(f"{server.url}/readyz", timeout=5.0).json()


def count(server, text: str) -> int:
    return server.logs().count(text)


def serves_everywhere(servers, key: str, value: int) -> bool:
    for server in servers:
        for _ in range(8):
            r = evaluate(server, key)
            if r.status_code != 200 or r.json()["value"] != value:
                return False
    return True


def test_every_process_detects_redis_data_loss(proxy_factory, redis_server):
    servers = [proxy_factory(extra_args=["--workers", str(n)] if n > 1 else [])
               for n in WORKERS]
    first = servers[0]
    publish = first.redis_client
    publisher.push(publish, "test", publisher.parse_document(
        orjson.dumps(doc(1)), source="test"), author="tests")
    v2 = publisher.push(publish, "test", publisher.parse_document(
        orjson.dumps(doc(2)), source="test"), author="tests").version
    key, _ = keys.create(publish, "test", "client", "kept")
    wait_until(lambda: serves_everywhere(servers, key, 2), timeout=15,
               what="every worker serves version 2 with the key")
    for server, n in zip(servers, WORKERS, strict=True):
        assert count(server, "redis connected") == n  # one Redis source per worker

    redis_server.restart(empty=True)  # SIGKILL, data dir wiped, same port

    # Every worker reconnected (and so reloaded from the empty Redis) before we look.
    wait_until(lambda: all(count(s, "redis connected") == 2 * n
                           for s, n in zip(servers, WORKERS, strict=True)),
               timeout=20, what="every worker reconnected to the empty Redis")
    for server in servers:
        statuses = []
        for _ in range(HITS):
            r = evaluate(server, key)
            statuses.append(r.status_code)
            assert r.status_code == 200, (server.url, statuses, r.text, server.logs()[-3000:])
            assert r.json()["value"] == 2
        for _ in range(HITS // 2):
            body = readyz(server)
            assert body["status"] == "degraded" and "stale" in body["reason"], body
            assert body["envs"]["test"] == v2
    # Each process told the loss on its own, not only the one that recreated the secret.
    for server, n in zip(servers, WORKERS, strict=True):
        assert count(server, "redis lost its data") == n, server.logs()[-3000:]

    # The operator re-publishes: a new key and the flags; every worker adopts both.
    new_key, _ = keys.create(publish, "test", "client", "after-loss")
    assert publisher.push(publish, "test", publisher.parse_document(
        orjson.dumps(doc(9)), source="test"), author="tests").version == 1
    wait_until(lambda: serves_everywhere(servers, new_key, 9), timeout=15,
               what="every worker serves the re-published flags to the new key")
    for server in servers:
        for _ in range(HITS):
            r = evaluate(server, new_key)
            assert r.status_code == 200 and r.json()["value"] == 9
        wait_until(lambda s=server: all(readyz(s)["status"] == "ok" for _ in range(8)),
                   timeout=10, what="readyz ok on every worker after the re-publish")
