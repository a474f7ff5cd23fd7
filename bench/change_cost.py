"""Change cost: the proxy's CPU per applied rule change, against a bare Redis follower's.

What following and applying one change costs the evaluation loop, measured alone (no
clients, no readers), so the number is steady enough to compare two builds. Written when the
soak (bench/soak.py) pointed at this work for the storm's p99; the soak's seventh pass found
the garbage collector instead (docs/streams.md), and this stays as the per-change figure.

Starts its own redis-server (free port), seeds the soak's 50 flags, then starts on core 0
both `flagedge serve` and a bare follower: a redis-py asyncio client (uvloop) blocked in
XREAD on the same change stream, doing nothing with what it reads. It is the floor any
Redis-following process pays: being woken once per change and reading it. Each round, both
idle for ``--idle`` s, then this process (core 1) writes ``--rate`` one-flag changes a second
for ``--duration`` s (the soak's writes, one Lua script each, as `flagedge push` writes).
For each process:

    CPU per change = (CPU during the writes - its idle CPU rate x their length) / changes

Prints each round and the median, for both, and the ratio.

    python bench/change_cost.py [--rate 100] [--duration 10] [--idle 5] [--rounds 3]
                                [--allow-list 100]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/change_cost.py` from a checkout

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import soak  # noqa: E402
from benchutil import pinned, stop  # noqa: E402


def per_change(cpu_idle: float, idle_s: float, cpu_writes: float, writes_s: float,
               changes: int) -> float:
    """CPU seconds per change: what the writes cost above the process's idle rate."""
    return (cpu_writes - cpu_idle / idle_s * writes_s) / changes


def follower_process(url: str, key: str) -> None:
    """Follow ``key`` with XREAD and nothing else; prints READY just before its first read,
    runs until stopped."""
    import uvloop

    from proxy.storage import url as redisurl

    async def follow() -> None:
        client = redisurl.async_client(url)
        rows = await client.xrevrange(key, "+", "-", count=1)
        last = rows[0][0] if rows else b"0-0"
        print("READY", flush=True)
        while True:
            reply = await client.xread({key: last}, block=2000, count=1000)
            for _key, entries in reply or []:
                last = entries[-1][0]

    uvloop.run(follow())


def measure(pids: dict[str, int], redis_url: str, args: argparse.Namespace
            ) -> dict[str, float]:
    """One round: idle, then the writes. Returns CPU seconds per change by process name."""
    before = {name: soak.cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(args.idle)
    idle_s = time.monotonic() - t0
    idle = {name: soak.cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    before = {name: soak.cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # it prints "WROTE n rate 0"
        soak.writer_process(redis_url, "", args.rate, args.duration, 0.0, 0.0)
    writes_s = time.monotonic() - t0
    changes = int(out.getvalue().split()[1])
    time.sleep(0.2)  # let the last change land before reading the CPU counters
    writes_s += 0.2
    return {name: per_change(idle[name], idle_s, soak.cpu_seconds(pid) - before[name],
                             writes_s, changes) for name, pid in pids.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of changes")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--allow-list", type=int, default=100,
                        help="emails in each targeted flag's rule (100: ~4 KB per change)")
    parser.add_argument("--follower", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        follower_process(args.redis, args.key)
        return
    soak.ALLOW_LIST = args.allow_list
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # the writer and Redis; both followers on core 0

    import httpx
    import redis

    from proxy.dev.devredis import free_port
    from proxy.release import publisher
    from proxy.release.changeset import Document
    from proxy.storage import layout
    from tests.redis_server import RedisServer
    from tests.waiting import wait_until

    with tempfile.TemporaryDirectory(prefix="flagedge-change-cost-") as tmp:
        server = RedisServer(Path(tmp) / "redis", port=free_port(), persist=False).start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with redis.Redis.from_url(server.url) as rc:
                publisher.push(rc, soak.ENV, Document.from_json(soak.document()), author="bench")
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
            proxy = subprocess.Popen(
                pinned(0, [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1",
                           "--port", str(port), "--redis", server.url, "--env", soak.ENV,
                           "--log-level", "warning", "--no-access-log"]),
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proxy)
            follower = subprocess.Popen(
                pinned(0, [sys.executable, __file__, "--follower", "--redis", server.url,
                           "--key", layout.changes_key(soak.ENV)]),
                stdout=subprocess.PIPE)
            procs.append(follower)
            assert follower.stdout is not None
            if follower.stdout.readline().strip() != b"READY":
                raise SystemExit("the bare follower did not start")

            def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
                return False

            wait_until(ready, timeout=30, what="proxy ready")
            pids = {"proxy": proxy.pid, "bare follower": follower.pid}
            print(f"change cost: {args.rounds} rounds of {args.idle:.0f} s idle, then "
                  f"{args.rate:.0f} one-flag changes/s for {args.duration:.0f} s "
                  f"(allow lists of {args.allow_list}); no clients, no readers", flush=True)
            rounds = []
            for i in range(args.rounds):
                result = measure(pids, server.url, args)
                rounds.append(result)
                print(f"round {i + 1}: " + ", ".join(
                    f"{name} {us * 1e6:.0f} us" for name, us in result.items()), flush=True)
            medians = {name: statistics.median(r[name] for r in rounds) for name in pids}
            for name, value in medians.items():
                print(f"{name:14s} CPU per change (median) {value * 1e6:6.0f} us")
            print(f"RATIO proxy/bare follower {medians['proxy'] / medians['bare follower']:.2f}x")
        finally:
            for proc in procs:
                stop(proc)
            server.stop()


if __name__ == "__main__":
    main()
