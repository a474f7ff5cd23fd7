"""Change propagation: time from the Redis write to the store applying it.

Starts its own redis-server (free port, no persistence), seeds an environment of 50 flags,
runs a RedisSource, then makes 1,000 pushes of one-flag changes (`publisher.push`, the CLI's
code path), one at a time. For each, the latency is the store's apply time minus the write
time recorded inside the Lua script (Redis TIME; same host, same clock).

Same-run baseline: a bare redis-py asyncio reader blocked in XREAD on a stream, woken by a
Lua XADD stamping Redis TIME the same way: the floor that Redis + the client library set.
Prints p50/p99/max for both and the ratio. Goal: p99 < 10 ms.

    python bench/propagation.py [--n 1000] [--flags 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aredis

from proxy.dev.devredis import start_redis
from proxy.keys import KeyRing
from proxy.model import Change
from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.sources.redis import RedisSource
from proxy.store import Store

ENV = "bench"
STAMPED_XADD = """
local t = redis.call('TIME')
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'at',
  t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
"""


def flag(i: int, default: str) -> dict:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default,
            "targeting": {"if": [{"in": [{"var": "email"}, [f"user{i}@example.com"]]}, "on"]}}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name:28} n={len(ms):5}  p50={statistics.median(ms):6.3f} ms  "
            f"p99={pct(ms, 99):6.3f} ms  max={max(ms):7.3f} ms")


async def measure_flagedge(url: str, n: int, n_flags: int) -> tuple[list[float], list[float]]:
    sync = redis.Redis.from_url(url)
    flags = {f"flag-{i}": flag(i, "off") for i in range(n_flags)}
    publisher.push(sync, ENV, Document(dict(flags)), author="bench")
    store, applied = Store(), threading.Event()
    lags: list[float] = []

    def on_change(change: Change, _fs: object) -> None:
        if change.written_at and not change.reset:
            lags.append((time.time() - change.written_at) * 1000)
            applied.set()

    store.subscribe(on_change)
    source = RedisSource(url, store, KeyRing(), env=ENV)
    task = asyncio.create_task(source.run())
    while store.get(ENV) is None:
        await asyncio.sleep(0.01)
    round_trips: list[float] = []

    def pusher() -> None:
        for k in range(n):
            key = f"flag-{k % n_flags}"
            flags[key] = flag(k % n_flags, "on" if flags[key]["defaultVariant"] == "off"
                              else "off")
            applied.clear()
            t0 = time.perf_counter()
            publisher.push(sync, ENV, Document(dict(flags)), author="bench")
            if not applied.wait(5):
                raise RuntimeError(f"push {k} not applied within 5 s")
            round_trips.append((time.perf_counter() - t0) * 1000)

    await asyncio.to_thread(pusher)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await source.close()
    return lags, round_trips


async def measure_baseline(url: str, n: int) -> list[float]:
    # redis-py 8 defaults to a 5 s socket timeout: leave room for the blocking read.
    reader = aredis.Redis.from_url(url, socket_timeout=30)
    sync = redis.Redis.from_url(url)
    script = sync.register_script(STAMPED_XADD)
    lags: list[float] = []
    last = "0-0"  # not "$": an entry written before the first XREAD arrives is not lost

    def writer(ready: threading.Event, done: threading.Event) -> None:
        for _ in range(n):
            ready.wait(5)
            ready.clear()
            script(keys=["bench:baseline"])
        done.set()

    ready, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=writer, args=(ready, done), daemon=True)
    thread.start()
    while len(lags) < n:
        read = asyncio.ensure_future(reader.xread({"bench:baseline": last}, block=5000))
        await asyncio.sleep(0)  # the XREAD is on the wire before the writer goes
        ready.set()
        for _key, entries in await read or []:
            for entry_id, fields in entries:
                lags.append((time.time() - float(fields[b"at"])) * 1000)
                last = entry_id
    thread.join(5)
    await reader.aclose()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="pushes (default 1000)")
    parser.add_argument("--flags", type=int, default=50, help="flags in the environment")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            url = f"redis://127.0.0.1:{port}/0"
            baseline = asyncio.run(measure_baseline(url, args.n))
            lags, round_trips = asyncio.run(measure_flagedge(url, args.n, args.flags))
        finally:
            proc.terminate()
            proc.wait(10)
    print(summary("baseline XADD -> XREAD", baseline))
    print(summary("flagedge write -> applied", lags))
    print(summary("push() call -> applied", round_trips))
    print(f"ratio flagedge/baseline: p50 {statistics.median(lags) / statistics.median(baseline):.1f}x"
          f"  p99 {pct(lags, 99) / pct(baseline, 99):.1f}x")
    ok = pct(lags, 99) < 10.0
    print(f"goal p99 < 10 ms: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
