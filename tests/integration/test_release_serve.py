"""An applied change request is an ordinary new version (DESIGN §10): running `flagedge
serve` processes follow it live. Real redis-server, two real serve processes, the real CLI,
OFREP over HTTP."""

from __future__ import annotations

import time

import pytest

from tests.integration.release_support import OFF, ON, doc_file, flagedge
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


def test_propose_approve_reaches_running_proxies_within_a_second(proxy_factory, redis_server,
                                                                   tmp_path):
    url = redis_server.url
    assert flagedge("push", doc_file(tmp_path, "v1.json", {"a": ON}), "--env", "test",
                    url=url).returncode == 0
    assert flagedge("envs", "protect", "test", "--approvals", "1", url=url).returncode == 0
    proxies = [proxy_factory(extra_args=["--no-auth"], wait="readyz") for _ in range(2)]
    clients = [p.client(None) for p in proxies]
    try:
        for c in clients:
            assert c.post("/ofrep/v1/evaluate/flags/a", json={}).json()["value"] is True
        r = flagedge("propose", doc_file(tmp_path, "v2.json", {"a": OFF}), "--env", "test",
                     "-m", "turn a off", url=url, author="ann")
        assert r.returncode == 0 and r.stdout.endswith("request 1\n"), r.stderr
        for c in clients:  # proposing changes nothing served
            assert c.post("/ofrep/v1/evaluate/flags/a", json={}).json()["value"] is True
        assert flagedge("approve", "1", "--env", "test", url=url, author="bob").returncode == 0
        applied = time.monotonic()
        for c in clients:
            wait_until(lambda c=c: c.post("/ofrep/v1/evaluate/flags/a",
                                          json={}).json()["value"] is False,
                       timeout=5, what="the approved change on the proxy")
        assert time.monotonic() - applied < 1.0, "approved change took over a second to serve"
        for p in proxies:
            assert p.versions()["test"] == 2
    finally:
        for c in clients:
            c.close()
