"""Insights bench (issue 24): what counting costs the bulk HTTP path, and what a flush costs.

Two `flagedge serve` processes follow one real redis-server (the configuration a user gets,
not the offline file mode, where nothing is flushed): one with the defaults (insights on:
users seen, split assignments recorded, a flush every 5 s), one with insights_flush = 0
(off). Both pinned to core 0, wrk on core 1, in alternating rounds, with 20 and with 500
flags and every context new (a never-seen targetingKey: what counting costs most); goal:
on / off >= 0.95 (counting costs at most 5 %). Then, in process, one flush of 500 flags x 3
variants of exposures and 10,000 users against the same Redis (reported).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import pinned, stop
from ofrep_http import NEW_USERS, lua_script, scaled_document
from report import Row, at_least, finish
from wrk import ensure_wrk, median, run_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
ENV = "bench"
GOAL = 0.95
SIZES = (20, 500)


def start_serve(redis_url: str, insights: bool) -> tuple[subprocess.Popen, int]:
    from proxy.dev.devredis import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env["FLAGEDGE_INSIGHTS_FLUSH"] = "5" if insights else "0"
    proc = subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--redis", redis_url, "--env", ENV, "--host",
        "127.0.0.1", "--port", str(port)]), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    return proc, port


def setup_redis(url: str, flags: int) -> str:
    """Push ``flags`` flags (about half static) and create a client key; returns it."""
    from proxy.release import publisher
    from proxy.release.changeset import Document
    from proxy.storage import keys
    from proxy.storage.url import sync_client

    client = sync_client(url)
    client.flushall()
    publisher.push(client, ENV, Document.from_json(scaled_document(flags)))
    raw, _record = keys.create(client, ENV, "client", "bench")
    return raw


def measure_size(wrk: str, tmp: Path, url: str, flags: int, args: argparse.Namespace) -> dict:
    key = setup_redis(url, flags)
    procs = {"on": start_serve(url, True), "off": start_serve(url, False)}
    try:
        for proc, port in procs.values():
            wait_port(port, proc)
        script = lua_script(tmp / f"new-{flags}.lua", NEW_USERS, key)
        runs: dict[str, list] = {name: [] for name in procs}
        for _ in range(args.rounds):
            for name, (_proc, port) in procs.items():
                runs[name].append(run_wrk(wrk, f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags",
                                          script, args.duration / args.rounds, args.connections))
        return {name: median(r) for name, r in runs.items()}
    finally:
        for proc, _port in procs.values():
            stop(proc)


def flush_cost(url: str, flags: int = 500, users: int = 10_000) -> float:
    """CPU milliseconds one flush takes from the event loop (Redis works in its own process):
    ``flags`` x 3 variants of exposures and ``users`` users."""
    from proxy.api.metrics import HotMetrics
    from proxy.insights.exposures import Flusher
    from proxy.storage.url import async_client
    from proxy.store import Store

    async def run() -> float:
        hot = HotMetrics()
        for f in range(flags):
            for v in ("a", "b", "c"):
                hot.count_reported(ENV, f"flag-{f}", v, "TARGETING_MATCH", 7)
        for u in range(users):
            hot.see_user(ENV, f"user-{u}")
        client = async_client(url)
        flusher = Flusher(client, hot, Store(), days=30)
        await flusher.flush()  # loads the scripts: not a steady-state flush
        for f in range(flags):
            for v in ("a", "b", "c"):
                hot.count_reported(ENV, f"flag-{f}", v, "TARGETING_MATCH", 7)
        for u in range(users):
            hot.see_user(ENV, f"user-{u}-again")
        started = time.process_time()  # this process's CPU: the event loop's share
        await flusher.flush()
        took = time.process_time() - started
        await client.aclose()
        assert flusher.failures == 0
        return took * 1000

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    from proxy.dev.devredis import start_redis

    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-insights-"))
    redis, port = start_redis(tmp / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    rows: list[Row] = []
    details: dict = {"duration": args.duration, "rounds": args.rounds, "rps": {}}
    try:
        for flags in SIZES:
            res = measure_size(wrk, tmp, url, flags, args)
            details["rps"][flags] = {k: round(v.rps) for k, v in res.items()}
            rows.append(at_least(
                f"insights on / off, {flags} flags, new users (bulk OFREP)",
                res["on"].rps / res["off"].rps, GOAL,
                f"on {res['on'].rps:,.0f} req/s; off {res['off'].rps:,.0f}"))
        ms = flush_cost(url)
        details["flush_ms_500x3_10k_users"] = round(ms, 1)
        rows.append(Row("one flush: 500 flags x 3 variants, 10,000 users", "report",
                        round(ms, 1), "CPU ms on the event loop", True, "ms"))
    finally:
        stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ninsights counting, Redis source, 1 worker per serve on core 0, wrk -c"
          f"{args.connections} on core 1, {args.duration:.0f}s per server in {args.rounds} "
          "alternating rounds (medians)")
    return finish("insights", rows, details)


if __name__ == "__main__":
    sys.exit(main())
