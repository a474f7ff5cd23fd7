"""Change propagation: time from the Redis write to the store applying it.

Starts its own redis-server (free port, no persistence), seeds an environment of 50 flags,
runs a RedisSource, then makes 1,000 pushes of one-flag changes (`publisher.push`, the CLI's
code path), one at a time. For each, the latency is the store's apply time minus the write
time recorded inside the Lua script (Redis TIME; same host, same clock).

Same-run baseline: a bare redis-py asyncio reader blocked in XREAD on a stream, woken by a
Lua XADD stamping Redis TIME the same way: the floor that Redis + the client library set.
The two alternate in ``--rounds`` rounds (baseline, then flagedge, each n / rounds writes), so
that the machine's drift over the run lands on both; the figures are medians of the rounds'
p50 and p99. Goal: p99 < 10 ms.

    python bench/propagation.py [--n 1000] [--flags 50] [--rounds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/propagation.py` from a checkout

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from report import at_most, finish  # noqa: E402

from proxy.dev.devredis import start_redis  # noqa: E402
from proxy.keys import KeyRing  # noqa: E402
from proxy.model import Change  # noqa: E402
from proxy.release import publisher  # noqa: E402
from proxy.release.changeset import Document  # noqa: E402
from proxy.sources.redis import RedisSource  # noqa: E402
from proxy.store import Store  # noqa: E402

ENV = "bench"
GOAL_P99_MS = 10.0
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


def split(n: int, rounds: int) -> list[int]:
    """n writes over ``rounds`` rounds, as evenly as whole writes go."""
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


def medians(rounds: list[list[float]]) -> tuple[float, float]:
    """The median over rounds of each round's p50, and of each round's p99."""
    return (statistics.median(statistics.median(r) for r in rounds),
            statistics.median(pct(r, 99) for r in rounds))


def summary(name: str, rounds: list[list[float]]) -> str:
    p50, p99 = medians(rounds)
    pooled = [v for r in rounds for v in r]
    return (f"{name:28} n={len(pooled):5}  p50={p50:6.3f} ms  p99={p99:6.3f} ms  "
            f"(pooled p99={pct(pooled, 99):6.3f} ms, max={max(pooled):7.3f} ms)")


class Flagedge:
    """The proxy's path: publisher.push from a thread, a RedisSource applying into a Store."""

    def __init__(self, url: str, n_flags: int):
        self.sync = redis.Redis.from_url(url)
        self.n_flags = n_flags
        self.flags = {f"flag-{i}": flag(i, "off") for i in range(n_flags)}
        self.store, self.applied = Store(), threading.Event()
        self.lags: list[float] = []
        self.pushes = 0
        self.source = RedisSource(url, self.store, KeyRing(), env=ENV)
        self.task: asyncio.Task | None = None

    def on_change(self, change: Change, _fs: object) -> None:
        if change.written_at and not change.reset:
            self.lags.append((time.time() - change.written_at) * 1000)
            self.applied.set()

    async def start(self) -> None:
        publisher.push(self.sync, ENV, Document(dict(self.flags)), author="bench")
        self.store.subscribe(self.on_change)
        self.task = asyncio.create_task(self.source.run())
        while self.store.get(ENV) is None:
            await asyncio.sleep(0.01)

    async def round(self, n: int, round_trips: list[float]) -> list[float]:
        self.lags = []

        def pusher() -> None:
            for _ in range(n):
                k = self.pushes
                self.pushes += 1
                key = f"flag-{k % self.n_flags}"
                on = self.flags[key]["defaultVariant"] == "off"
                self.flags[key] = flag(k % self.n_flags, "on" if on else "off")
                self.applied.clear()
                t0 = time.perf_counter()
                publisher.push(self.sync, ENV, Document(dict(self.flags)), author="bench")
                if not self.applied.wait(5):
                    raise RuntimeError(f"push {k} not applied within 5 s")
                round_trips.append((time.perf_counter() - t0) * 1000)

        await asyncio.to_thread(pusher)
        return self.lags

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.source.close()
        self.sync.close()


class Baseline:
    """A bare redis-py asyncio reader in XREAD, woken by a stamped XADD from a thread."""

    def __init__(self, url: str):
        # redis-py 8 defaults to a 5 s socket timeout: leave room for the blocking read.
        self.reader = aredis.Redis.from_url(url, socket_timeout=30)
        self.sync = redis.Redis.from_url(url)
        self.script = self.sync.register_script(STAMPED_XADD)
        self.last = "0-0"  # not "$": an entry written before the first XREAD is not lost

    async def round(self, n: int) -> list[float]:
        lags: list[float] = []
        ready = threading.Event()

        def writer() -> None:
            for _ in range(n):
                ready.wait(5)
                ready.clear()
                self.script(keys=["bench:baseline"])

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        while len(lags) < n:
            read = asyncio.ensure_future(self.reader.xread({"bench:baseline": self.last},
                                                           block=5000))
            await asyncio.sleep(0)  # the XREAD is on the wire before the writer goes
            ready.set()
            for _key, entries in await read or []:
                for entry_id, fields in entries:
                    lags.append((time.time() - float(fields[b"at"])) * 1000)
                    self.last = entry_id
        thread.join(5)
        return lags

    async def close(self) -> None:
        await self.reader.aclose()
        self.sync.close()


async def measure(url: str, n: int, n_flags: int, rounds: int
                  ) -> tuple[list[list[float]], list[list[float]], list[float]]:
    """Per round: the baseline's lags, flagedge's lags; and every push() round trip."""
    edge, base = Flagedge(url, n_flags), Baseline(url)
    await edge.start()
    base_rounds: list[list[float]] = []
    edge_rounds: list[list[float]] = []
    round_trips: list[float] = []
    try:
        for size in split(n, rounds):
            base_rounds.append(await base.round(size))
            edge_rounds.append(await edge.round(size, round_trips))
    finally:
        await edge.close()
        await base.close()
    return base_rounds, edge_rounds, round_trips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="pushes (default 1000)")
    parser.add_argument("--flags", type=int, default=50, help="flags in the environment")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rounds = max(1, min(args.rounds, args.n))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            base, edge, round_trips = asyncio.run(
                measure(f"redis://127.0.0.1:{port}/0", args.n, args.flags, rounds))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"{args.n} writes each, in {rounds} alternating rounds (medians of the rounds)")
    print(summary("baseline XADD -> XREAD", base))
    print(summary("flagedge write -> applied", edge))
    print(summary("push() call -> applied", [round_trips]))
    (b50, b99), (e50, e99) = medians(base), medians(edge)
    print(f"ratio flagedge/baseline: p50 {e50 / b50:.1f}x  p99 {e99 / b99:.1f}x")
    rows = [at_most("write -> applied p99 (median of rounds)", e99, GOAL_P99_MS,
                    f"bare XADD -> XREAD p99 {b99:.2f} ms, p50 {b50:.2f}; flagedge p50 "
                    f"{e50:.2f}", unit=" ms")]
    details = {"n": args.n, "flags": args.flags, "rounds": rounds,
               "per_round": {"baseline": [{"p50": statistics.median(r), "p99": pct(r, 99)}
                                          for r in base],
                             "flagedge": [{"p50": statistics.median(r), "p99": pct(r, 99)}
                                          for r in edge]},
               "pooled_max_ms": {"baseline": max(v for r in base for v in r),
                                 "flagedge": max(v for r in edge for v in r)},
               "push_round_trip_p50_ms": statistics.median(round_trips)}
    return finish("propagation", rows, details)


if __name__ == "__main__":
    sys.exit(main())
