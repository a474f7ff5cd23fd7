"""flagedge:layout: a Redis written in a layout newer than this code is refused, with a clear
message, by `serve` (last good rules kept, /readyz 503) and by every CLI command (exit 9)."""

from __future__ import annotations

import httpx
import pytest
import redis

from proxy.storage import layout
from tests.integration.test_cli_publish import doc_file, flagedge
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"}}}
NEWER = layout.LAYOUT_VERSION + 1
REASON = f"redis layout {NEWER} is newer than this flagedge (knows {layout.LAYOUT_VERSION})"


def readyz(server) -> tuple[int, dict]:
    r = httpx.get(f"{server.url}/readyz", timeout=2.0)
    return r.status_code, r.json()


def test_cli_refuses_a_newer_layout_with_exit_9(redis_server, tmp_path):
    url = redis_server.url
    client = redis.Redis.from_url(url)
    path = doc_file(tmp_path, "flags.json", DOC)
    assert flagedge("push", path, "--env", "dev", url=url).returncode == 0
    assert client.get(layout.LAYOUT) == str(layout.LAYOUT_VERSION).encode()  # stamped
    client.set(layout.LAYOUT, NEWER)
    for args in (("push", path, "--env", "dev"), ("keys", "list"), ("envs", "list"),
                 ("history", "--env", "dev"), ("keys", "create", "--env", "dev", "--kind",
                                               "client", "--name", "x")):
        r = flagedge(*args, url=url)
        assert r.returncode == 9, (args, r.stderr)
        assert REASON in r.stderr and "upgrade flagedge" in r.stderr
    assert client.hlen(layout.KEYS) == 0  # keys create wrote nothing
    client.delete(layout.LAYOUT)  # missing: data of older code, layout 1
    assert flagedge("envs", "list", url=url).returncode == 0


def test_serve_keeps_last_good_rules_but_is_not_ready_on_a_newer_layout(proxy_factory):
    server = proxy_factory()
    server.push(DOC)
    key = server.create_key()
    server.redis_client.set(layout.LAYOUT, NEWER)
    server.redis_client.client_kill_filter(_type="normal", skipme=True)  # reconnect: re-read
    wait_until(lambda: readyz(server)[0] == 503, timeout=10, what="/readyz 503")
    _status, body = readyz(server)
    assert body["reason"] == REASON and body["envs"] == {"test": 1}
    with server.client(key) as c:  # last good rules still served
        r = c.post("/ofrep/v1/evaluate/flags/f", json={"context": {}})
        assert r.status_code == 200 and r.json()["value"] is True
    server.push({"flags": {}}, wait=False)  # a write the proxy must not follow
    server.redis_client.set(layout.LAYOUT, NEWER)  # the push above does not lower it
    wait_until(lambda: server.logs().count("not following redis") >= 1, timeout=5,
               what="the refusal logged")
    assert server.versions() == {"test": 1}
    metrics = httpx.get(f"{server.url}/metrics", timeout=2.0).text
    assert 'flagedge_source_degraded{env="*"} 1.0' in metrics
    server.redis_client.set(layout.LAYOUT, layout.LAYOUT_VERSION)  # e.g. a downgrade undone
    wait_until(lambda: readyz(server)[0] == 200, timeout=15, what="ready again")
    server.wait_version(2)
    metrics = httpx.get(f"{server.url}/metrics", timeout=2.0).text
    assert 'flagedge_source_degraded{env="*"} 0.0' in metrics
    assert server.logs().count(f"not following redis: {REASON}") == 1  # once, not per retry


def test_serve_started_on_a_newer_layout_is_not_ready(proxy_factory, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.set(layout.LAYOUT, NEWER)
    server = proxy_factory()
    wait_until(lambda: "not following redis" in server.logs(), timeout=10, what="refusal")
    status, body = readyz(server)
    assert status == 503 and body["reason"] == REASON
