"""`flagedge serve` as an operator runs it: several workers, config file + env vars,
graceful SIGTERM."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"}}}
SINGLE_OK = 'flagedge_http_requests_total{route="/ofrep/v1/evaluate/flags/{key:path}",status="200"}'


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_workers_share_counters(proxy_factory):
    server = proxy_factory(extra_args=["--workers", "2"])
    server.push(DOC)
    key = server.create_key("client")
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(30):  # a new connection each time, so both workers take some
        r = httpx.post(f"{server.url}/ofrep/v1/evaluate/flags/f", json={}, headers=auth)
        assert r.status_code == 200

    def scrape() -> float:
        return metric(httpx.get(f"{server.url}/metrics").text, SINGLE_OK)

    # Whichever worker answers a scrape reports both workers' counts once their snapshots
    # (every ~1 s) are written: wait until eight scrapes in a row agree, then it stays so.
    wait_until(lambda: all(scrape() == 30 for _ in range(8)), timeout=10,
               what="both workers' requests in /metrics")
    assert all(scrape() == 30 for _ in range(8))


def test_config_file_then_env_vars_then_flags(proxy_factory, tmp_path):
    cfg = tmp_path / "flagedge.toml"
    cfg.write_text('cors_origins = ["https://toml.example"]\nbody_limit = 1000\n'
                   'rate_limit = 1000\n')
    server = proxy_factory(extra_args=["--config", str(cfg), "--rate-limit", "0"],
                           environ={"FLAGEDGE_BODY_LIMIT": "3000"})
    server.push(DOC)
    key = server.create_key("client")
    with server.client(key) as c:
        ok = c.post("/ofrep/v1/evaluate/flags/f", json={"context": {"pad": "x" * 2000}})
        assert ok.status_code == 200  # env var (3000) beat the file (1000)
        big = c.post("/ofrep/v1/evaluate/flags/f", json={"context": {"pad": "x" * 4000}})
        assert big.status_code == 413
        pre = c.options("/ofrep/v1/evaluate/flags", headers={
            "Origin": "https://toml.example", "Access-Control-Request-Method": "POST"})
        assert pre.headers.get("access-control-allow-origin") == "https://toml.example"
        # --rate-limit 0 (flag) beat rate_limit = 1000 (file): unlimited.
        assert all(c.post("/ofrep/v1/evaluate/flags/f", json={}).status_code == 200
                   for _ in range(20))


def test_sigterm_lets_in_flight_requests_finish(proxy_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    result: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        # Names a version the server will never reach: it waits its full 500 ms first.
        with proxy_server.client(key) as c:
            result["r"] = c.post("/ofrep/v1/evaluate/flags", params={"flagConfigEtag": "999"},
                                 json={})

    t = threading.Thread(target=slow_request)
    t.start()
    with proxy_server.client(None) as c:  # the scrape itself is one request in flight
        wait_until(lambda: metric(c.get("/metrics").text, "flagedge_http_requests_in_flight") >= 2,
                   timeout=5, what="the slow request in flight")
    code = proxy_server.stop()
    t.join(5)
    assert result["r"].status_code == 200 and result["r"].json()["flags"][0]["key"] == "f"
    assert code == 0  # a clean SIGTERM: exit 0 (uvicorn's re-raised SIGTERM is caught)
    assert "flagedge stopped" in proxy_server.logs()
