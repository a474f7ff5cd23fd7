"""A perf smoke test (issue 21): catches gross regressions in seconds, not a benchmark.

A bulk OFREP request to a real `flagedge serve` with its defaults (access log on) over
loopback, against a request to a bare Starlette echo app (bench/ofrep_http.py's baseline)
timed in the same test, alternating blocks of sequential requests. The ratio is about 1.1x
on a quiet machine (one request at a time from a Python client, whose own cost dominates);
the bound of 4x leaves room for noise, and a change adding 2 ms to each bulk request fails
it (5.2x, tried). Real figures come from bench/ofrep_http.py.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from tests.bench_module import BENCH, load
from tests.integration.conftest import ROOT
from tests.redis_server import free_port, wait_until

pytestmark = pytest.mark.integration

BOUND = 4.0  # flagedge's median request time / the echo's (1.1x here, quiet)
BLOCKS, PER_BLOCK = 5, 100


def per_request(client: httpx.Client, path: str, bodies: list[bytes], headers: dict) -> float:
    started = time.perf_counter()
    for body in bodies:
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == 200, r.text
    return (time.perf_counter() - started) / len(bodies)


def test_a_bulk_request_costs_less_than_four_echo_requests(proxy_factory, tmp_path):
    bench = load("ofrep_http")
    (tmp_path / "flags.json").write_bytes(orjson.dumps(bench.flag_document()))
    server = proxy_factory(redis=None, env=bench.ENV, wait="readyz",
                           extra_args=["--flags", str(tmp_path / "flags.json"), "--no-auth"])
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, str(BENCH / "ofrep_http.py"), "--floor", "echo",
                             "--port", str(echo_port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path = "/ofrep/v1/evaluate/flags"
    headers = {"Content-Type": "application/json"}
    bodies = [orjson.dumps({"context": {"targetingKey": f"user-{i}", "plan": "pro",
                                        "appVersion": "2.3.4", "country": "DE"}})
              for i in range(PER_BLOCK)]  # distinct users: every one evaluates once
    try:
        echo_url = f"http://127.0.0.1:{echo_port}"

        def echo_up() -> bool:
            try:
                return httpx.post(echo_url + path, content=b"{}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(echo_up, timeout=20, interval=0.05, what="the echo app")
        times: dict[str, list[float]] = {"flagedge": [], "echo": []}
        with httpx.Client(base_url=server.url, timeout=10) as edge, \
                httpx.Client(base_url=echo_url, timeout=10) as bare:
            for client in (edge, bare):  # warm: connections, first requests
                per_request(client, path, bodies[:10], headers)
            for block in range(BLOCKS):
                unique = [b.replace(b"user-", b"u%d-" % block) for b in bodies]
                times["flagedge"].append(per_request(edge, path, unique, headers))
                times["echo"].append(per_request(bare, path, unique, headers))
    finally:
        echo.terminate()
        echo.wait(10)
    ratio = statistics.median(times["flagedge"]) / statistics.median(times["echo"])
    print(f"perf smoke: flagedge {ratio:.1f}x the echo per request")
    assert ratio < BOUND, (ratio, times)
