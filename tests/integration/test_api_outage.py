"""Readiness and evaluations when Redis is away: 503 before anything was loaded (never a
hang), degraded-but-serving after, recovery when Redis returns."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"}}}


def test_readyz_degraded_during_outage_and_recovers(proxy_server, redis_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    with proxy_server.client(key) as c:
        assert c.get("/readyz").json()["status"] == "ok"
        redis_server.kill()
        wait_until(lambda: c.get("/readyz").json()["status"] == "degraded", timeout=15,
                   what="readyz degraded")
        ready = c.get("/readyz")
        assert ready.status_code == 200 and "redis" in ready.json()["reason"].lower()
        r = c.post("/ofrep/v1/evaluate/flags/f", json={})  # stale rules still served
        assert r.status_code == 200 and r.json()["value"] is True
        redis_server.restart()
        wait_until(lambda: c.get("/readyz").json()["status"] == "ok", timeout=20,
                   what="readyz ok after redis returns")


def test_no_redis_at_start_is_503_not_a_hang(proxy_factory, redis_server, tmp_path):
    redis_server.kill()
    server = proxy_factory(extra_args=["--no-auth"])
    with server.client(None) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        start = time.monotonic()
        r = c.post("/ofrep/v1/evaluate/flags", json={})
        assert r.status_code == 503 and time.monotonic() - start < 2.0
        assert r.headers["retry-after"] and "not reachable" in r.json()["errorDetails"]
    # With a bootstrap file the same outage serves the file, degraded.
    boot = tmp_path / "boot.json"
    boot.write_bytes(orjson.dumps(DOC))
    booted = proxy_factory(extra_args=["--no-auth", "--bootstrap", str(boot)], wait="readyz")
    with booted.client(None) as c:
        assert c.get("/readyz").json()["status"] == "degraded"
        assert c.post("/ofrep/v1/evaluate/flags/f", json={}).json()["value"] is True
