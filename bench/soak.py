"""Soak: stalled SSE readers plus a stream of rule changes while normal clients evaluate.

1,000 SSE connections that send their request and never read a byte (raw sockets with a tiny
receive buffer, in another process), 100 rule changes per second written to Redis (one Lua
script each, another process), while normal clients evaluate over HTTP at a fixed rate.
Starts its own redis-server and `flagedge serve`. Loopback socket buffers are large: a
"never-reading" socket absorbs MBs before it stalls, so for most of the run these readers
cost the server as much as live ones.

Reports the server's RSS at the start, every 10 s and at the end (it must stay bounded: each
stalled connection's queue is capped and coalesced), and the normal clients' latencies, as
ratios against a baseline measured in the same run:

- by default (``--alternate 5``), with the readers open throughout, 5 s quiet windows and 5 s
  storm windows alternate, ``--duration`` seconds of each. In the storm windows the writer
  writes to the proxy's Redis; in the quiet ones it writes the same changes at the same rate
  to a second redis-server the proxy does not follow (``--control idle``: writes nothing).
  So the two kinds of window differ only in the work the proxy does: drift over the run
  (caches, heap growth, the readers' buffers filling) and the bench's own load (writer,
  Redis, sharing the clients' core) land in both. The first 0.5 s of each window is left out
  (the transition), and a request that runs past its window's end counts in neither. Also
  printed: the proxy's CPU share in each kind of window, an A/A ratio (odd against even quiet
  windows) and a sign count (storm windows whose p99 is above the quiet window's before them;
  about half when storms change nothing);
- always, "before" (30 s of clients alone, no readers) against "during" (everything after).

Goals (README, docs/streams.md; exit 1 when one is missed): 0 errors and every stalled stream
still open at the end; RSS bounded: at most RSS_GROWTH_MB of growth over the second half of
the changes (the documented runs: flat at 99-101 MB from t=40 s of 120); p99 unaffected: the
storm windows' p99 at most P99_GOAL x the quiet windows' (the top of the A/A range the
documented runs measured, 0.98-1.15x; during / before with ``--alternate 0``).

``--decoy`` sends the storm windows' writes to the second Redis too: an A/A run, where nothing
differs between the windows for the proxy (the design's own noise floor). The bench's own
processes (readers, writer, redis-servers) run at the lowest CPU priority, so they delay the
timing clients that share their core as little as they can; ``--alternate 0`` runs the
changes continuously for ``--duration`` s (the earlier design). ``--gc-trace`` also reports
the proxy's garbage-collection pauses; ``--rounds`` times its fan-out passes and splits the
latencies by whether a request overlapped one (where the readers' cost lands).

    python bench/soak.py [--duration 60] [--readers 1000] [--changes 100] [--rate 200]
                         [--baseline 30] [--alternate 5] [--control decoy|idle] [--decoy]
                         [--proxy-env NAME=VALUE]
                         [--gc-trace] [--rounds] [--no-pin]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/soak.py` from a checkout

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import bisect  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from array import array  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
from benchutil import pinned, raise_nofile, stop  # noqa: E402
from report import Row, at_least, at_most, finish  # noqa: E402

ENV = "soak"
FLAGS = 50
STREAMS = ("events", "rules", "evaluated")
GUARD_S = 0.5  # left out at the start of each alternating window
RSS_GROWTH_MB = 5.0  # the most RSS may grow over the second half of the changes
P99_GOAL = 1.15  # storm / quiet p99: the top of the documented A/A range


ALLOW_LIST = 0  # set from --allow-list: emails in each targeted flag's rule


def flag(i: int, on: bool) -> dict[str, Any]:
    """Boolean flags; every third one targets a plan or an allow list of emails (its size sets
    how many bytes each change puts on the rules stream), so streams have work to do."""
    f: dict[str, Any] = {"state": "ENABLED", "variants": {"on": True, "off": False},
                         "defaultVariant": "on" if on else "off"}
    if i % 3 == 0:
        emails = [f"user{j}@customer{i}.example.com" for j in range(ALLOW_LIST)]
        f["targeting"] = {"if": [{"or": [{"==": [{"var": "plan"}, "pro"]},
                                         {"in": [{"var": "email"}, emails]}]}, "on", None]}
    return f


def document() -> dict[str, Any]:
    return {"flags": {f"f{i}": flag(i, True) for i in range(FLAGS)}}


# -- stalled readers (own process) -----------------------------------------------------------
def stalled_process(port: int, n: int, ckey: str, skey: str) -> None:
    """Open n streams, send each request, then never read. Prints READY, holds them until
    stdin closes."""
    raise_nofile()
    socks = []
    for i in range(n):
        kind = STREAMS[i % len(STREAMS)]
        if kind == "events":
            path, key = "/ofrep/v1/events", ckey
        elif kind == "rules":
            path, key = "/v1/stream/rules", skey
        else:  # a distinct context per connection: nothing shared between them
            ctx = base64.urlsafe_b64encode(orjson.dumps({"targetingKey": f"u{i}",
                                                         "plan": "pro" if i % 2 else "free"}))
            path, key = "/v1/stream/evaluated?context=" + ctx.rstrip(b"=").decode(), ckey
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # fill up fast, then stall
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                  f"Authorization: Bearer {key}\r\n\r\n".encode())
        socks.append(s)
    print("READY", flush=True)
    sys.stdin.read()  # never recv(): the readers stall until the orchestrator is done
    for s in socks:
        s.close()


# -- rule changes (own process) --------------------------------------------------------------
def writer_process(storm_url: str, control_url: str, rate: float, duration: float,
                   begin: float, period: float) -> None:
    """One single-flag change per tick (a Plan written by one Lua script, as `flagedge push`
    writes), paced at ``rate`` per second: to ``storm_url`` in the storm windows of the
    schedule that starts at ``begin`` (CLOCK_MONOTONIC, shared with the orchestrator), to
    ``control_url`` in its quiet windows (nothing if empty); or to ``storm_url`` for
    ``duration`` s from now when ``period`` is 0. Prints the storm writes and their rate."""
    import redis

    from proxy.release import publisher
    from proxy.release.changeset import Plan

    if period > 0:
        windows = schedule(begin, period, duration)
    else:
        windows = [(time.monotonic(), time.monotonic() + duration, True)]
    targets: dict[str, tuple[Any, dict[int, bool]]] = {}  # url -> client, each flag's state
    n = control = 0
    writing = 0.0
    for start, end, storm in windows:
        url = storm_url if storm else control_url
        time.sleep(max(0.0, start - time.monotonic()))
        if rate <= 0 or not url:  # --changes 0, or a quiet window with nothing to write
            time.sleep(max(0.0, end - time.monotonic()))
            continue
        client, state = targets.setdefault(
            url, (redis.Redis.from_url(url), dict.fromkeys(range(FLAGS), True)))
        interval, k = 1.0 / rate, 0
        while time.monotonic() < end:
            i = k % FLAGS
            old, new = flag(i, state[i]), flag(i, not state[i])
            state[i] = not state[i]
            publisher.write(client, ENV, Plan(added={}, changed={f"f{i}": (old, new)},
                                              removed={}), author="soak")
            k += 1
            time.sleep(max(0.0, start + k * interval - time.monotonic()))  # pacing
        if storm:
            n, writing = n + k, writing + time.monotonic() - start
        else:
            control += k
    print(f"WROTE {n} {n / writing if writing else 0.0:.1f} {control}", flush=True)


def schedule(begin: float, period: float, duration: float) -> list[tuple[float, float, bool]]:
    """Alternating windows from ``begin``, quiet first: (start, end, storm), ``duration``
    seconds of each kind, in whole windows."""
    n = 2 * max(1, math.ceil(duration / period))
    return [(begin + i * period, begin + (i + 1) * period, i % 2 == 1) for i in range(n)]


def split_by_schedule(starts: array[float], latencies: list[float],
                      windows: list[tuple[float, float, bool]],
                      guard: float) -> list[list[float]]:
    """The latencies of each window's requests. A request counts in the window it started in,
    unless it started in the window's first ``guard`` seconds (the previous kind's work may
    still be draining) or ran past the window's end (it saw both kinds)."""
    begins = [b for b, _, _ in windows]
    out: list[list[float]] = [[] for _ in windows]
    for t0, latency in zip(starts, latencies, strict=True):
        i = bisect.bisect_right(begins, t0) - 1
        if i >= 0 and begins[i] + guard <= t0 and t0 + latency <= windows[i][1]:
            out[i].append(latency)
    return out


# -- normal clients (this process) -----------------------------------------------------------
class Clients:
    """``workers`` loops evaluating at ``rate`` requests/s in total: alternately one flag and
    the bulk endpoint, each loop over its own keep-alive connection. Latencies are kept per
    phase. A bare HTTP/1.1 client on asyncio streams (requests pre-built, responses read by
    Content-Length): httpx cost ~70% of a core here, and the load generator's own CPU and
    scheduling jitter showed up in the very p99 it measures (it shares the 2 cores)."""

    def __init__(self, url: str, key: str, rate: float, workers: int = 8):
        host, port = url.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.key = key
        self.interval = workers / rate
        self.workers = workers
        self.phase = "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.starts: dict[str, array[float]] = {}  # per phase, the same order (untracked)
        self.errors: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._loop(w)) for w in range(self.workers)]

    async def stop(self) -> None:
        self.stopping = True  # ends a loop even if a cancel were lost
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _requests(self, w: int) -> list[bytes]:
        out = []
        for i in range(200):  # the cycle each loop walks through
            path = "/ofrep/v1/evaluate/flags" if i % 2 else f"/ofrep/v1/evaluate/flags/f{i % FLAGS}"
            out.append(self.post(path, {"targetingKey": f"client-{w}-{i % 100}",
                                        "plan": "pro" if i % 2 else "free"}))
        return out

    def post(self, path: str, context: dict[str, Any]) -> bytes:
        """One pre-built OFREP evaluation request for ``context``."""
        body = orjson.dumps({"context": context})
        return (f"POST {path} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {self.key}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\n\r\n".encode() + body)

    async def _loop(self, w: int) -> None:
        loop = asyncio.get_running_loop()
        requests = self._requests(w)
        next_at = loop.time() + w * self.interval / self.workers  # spread the loops
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        i = 0
        try:
            while not self.stopping:
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing
                next_at += self.interval
                request = requests[i % len(requests)]
                i += 1
                phase = self.phase
                t0 = loop.time()
                ok = False
                try:
                    if reader is None or writer is None:
                        reader, writer = await asyncio.open_connection(*self.addr)
                        t0 = loop.time()  # connecting is not what is measured
                    writer.write(request)
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel
                    # of stop() when the read completes at the same moment.
                    async with asyncio.timeout(10):
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = int(head.lower().split(b"content-length: ", 1)[1]
                                     .split(b"\r\n", 1)[0])
                        await reader.readexactly(length)
                    ok = head.startswith(b"HTTP/1.1 200 ")
                except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError,
                        ValueError):
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                if ok:
                    self.latencies.setdefault(phase, []).append(loop.time() - t0)
                    self.starts.setdefault(phase, array("d")).append(t0)
                else:
                    self.errors[phase] = self.errors.get(phase, 0) + 1
        finally:
            if writer is not None:
                writer.close()


# `--gc-trace`: the proxy runs under this wrapper, which times every garbage collection
# (gc.callbacks) and prints a cumulative summary line to its log every 5 s.
GC_WRAPPER = """
import gc, threading, time
stats = {g: [0, 0.0, 0.0] for g in range(3)}  # generation -> [count, total s, max s]
t0 = [0.0]
def cb(phase, info):
    if phase == "start":
        t0[0] = time.perf_counter()
    else:
        s = stats[info["generation"]]; d = time.perf_counter() - t0[0]
        s[0] += 1; s[1] += d; s[2] = max(s[2], d)
gc.callbacks.append(cb)
def report():
    while True:
        time.sleep(5)
        print("GCSTATS " + " ".join(f"g{g}:{n}/{t*1000:.1f}/{m*1000:.2f}"
              for g, (n, t, m) in stats.items()), file=sys.stderr, flush=True)
threading.Thread(target=report, daemon=True).start()
"""

# `--rounds`: the proxy runs under this wrapper, which appends each fan-out round's
# CLOCK_MONOTONIC start and end (two doubles; the events and rules pass and the evaluated pass
# are timed apart) to $SOAK_ROUNDS. The clients read the same clock (loop.time()), so each
# request can be told apart by whether it overlapped a round. One write(2) per pass and no
# objects kept: diagnostics must not add garbage-collector work to what they measure.
ROUNDS_WRAPPER = """
import functools, os, struct, time
import proxy.streams.fanout
fd = os.open(os.environ["SOAK_ROUNDS"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def timed(method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        t0 = time.monotonic()
        try:
            return await method(*args, **kwargs)
        finally:
            os.write(fd, struct.pack("dd", t0, time.monotonic()))
    return wrapper
for name in ("_distribute_sliced", "_distribute_evaluated"):
    setattr(proxy.streams.fanout.FanOut, name, timed(getattr(proxy.streams.fanout.FanOut, name)))
"""

RUN_PROXY = """
import runpy, sys
sys.argv = ["proxy", *sys.argv[1:]]
runpy.run_module("proxy", run_name="__main__")
"""


def read_rounds(path: Path) -> list[tuple[float, float]]:
    data = path.read_bytes() if path.exists() else b""
    return sorted(struct.iter_unpack("dd", data[: len(data) - len(data) % 16]))


def split_by_rounds(starts: array[float], latencies: list[float],
                    rounds: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Latencies of the requests that overlapped a fan-out pass, and of the others."""
    begins = [b for b, _ in rounds]
    ends = list(itertools.accumulate((e for _, e in rounds), max))  # passes may nest
    inside: list[float] = []
    outside: list[float] = []
    for t0, latency in zip(starts, latencies, strict=True):
        i = bisect.bisect_left(begins, t0 + latency) - 1  # the last pass begun before the end
        (inside if i >= 0 and ends[i] > t0 else outside).append(latency)
    return inside, outside


def gc_stats(log_path: Path) -> str | None:
    """The last GCSTATS line of the proxy log: per generation count/total ms/max ms."""
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines()
             if ln.startswith("GCSTATS ")]
    return lines[-1][8:] if lines else None


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] if s else float("nan")


def tcp_kernel_mb() -> float:
    """Memory the kernel holds in TCP socket buffers, machine-wide (/proc/net/sockstat
    ``TCP ... mem`` pages): what stalled readers cost outside the server's RSS."""
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (/proc/pid/stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy(samples: list[tuple[float, float]], windows: list[tuple[float, float, bool]],
         storm: bool) -> float:
    """The share of one core a process used in the windows of one kind, from (time, CPU
    seconds) samples: each interval between two samples counts in the window of its
    midpoint."""
    begins = [b for b, _, _ in windows]
    cpu = wall = 0.0
    for (t1, c1), (t2, c2) in itertools.pairwise(samples):
        i = bisect.bisect_right(begins, (t1 + t2) / 2) - 1
        if i >= 0 and (t1 + t2) / 2 < windows[i][1] and windows[i][2] == storm:
            cpu, wall = cpu + c2 - c1, wall + t2 - t1
    return cpu / wall if wall else float("nan")


def rss_growth(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """(MB grown from the sample nearest the run's half-way point to the last sample, the
    half-way sample's time) from (seconds, MB) samples: the start fills buffers and caches,
    a leak keeps growing through the second half."""
    end = samples[-1][0]
    t, mb = min(samples[:-1] or samples, key=lambda s: abs(s[0] - end / 2))
    return samples[-1][1] - mb, t


def goals(errors: tuple[int, int], open_end: float, readers: int,
          rss: list[tuple[float, float]], p99: dict[str, float]) -> list[Row]:
    """The soak's rows. ``errors``: the normal clients' before and during the readers;
    ``p99``: two seconds figures by name, the baseline first ({"quiet": .., "storm": ..})."""
    growth, since = rss_growth(rss)
    (base_name, base), (name, measured) = p99.items()
    return [
        at_most("normal clients' errors while the readers are open", errors[1], 0,
                f"{errors[0]} before them", unit=""),
        at_least("stalled streams still open at the end", open_end, readers,
                 f"{readers} opened", unit=""),
        at_most(f"RSS growth from t={since:.0f} s to the end (t={rss[-1][0]:.0f} s)", growth,
                RSS_GROWTH_MB, f"{rss[0][1]:.1f} MB at the start, "
                f"{max(v for _, v in rss):.1f} MB max", unit=" MB"),
        at_most(f"normal clients' p99, {name} / {base_name}",
                measured / base if base else float("inf"), P99_GOAL,
                f"{base_name} {base * 1000:.2f} ms, {name} {measured * 1000:.2f} ms", unit="x"),
    ]


def background(pid: int = 0) -> None:
    """The lowest CPU priority for one of the bench's own processes (0: this one), so the
    timing clients sharing its core are held up by it less. Less, not never: the writer and
    Redis alone, with the proxy idle, still moved the clients' p99 by 11-46% at nice 19,
    which is why the quiet windows carry the same writes (to the decoy)."""
    with contextlib.suppress(OSError):  # measured without it, then
        os.setpriority(os.PRIO_PROCESS, pid, 19)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def soak(args: argparse.Namespace, redis_url: str, workdir: Path,
               decoy_url: str | None) -> int:
    import httpx
    import redis

    from proxy.dev.devredis import free_port
    from proxy.release import publisher
    from proxy.release.changeset import Document
    from proxy.storage import keys

    rc = redis.Redis.from_url(redis_url)
    publisher.push(rc, ENV, Document.from_json(document()), author="soak")
    if decoy_url:  # the same rules, so each decoy write costs Redis and the writer the same
        with redis.Redis.from_url(decoy_url) as decoy:
            publisher.push(decoy, ENV, Document.from_json(document()), author="soak")
    ckey, _ = keys.create(rc, ENV, "client", "soak-clients")
    skey, _ = keys.create(rc, ENV, "server", "soak-rules")
    rc.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")},
           "FLAGEDGE_ACCESS_LOG": "false",
           # The readers stand for many users but all come from 127.0.0.1: the per-address
           # stream cap (sse_max_per_address, 100) would refuse all but 100 of them.
           "FLAGEDGE_SSE_MAX_PER_ADDRESS": str(max(100, args.readers)),
           **dict(item.split("=", 1) for item in args.proxy_env)}
    log = (workdir / "proxy.log").open("wb")
    if args.gc_trace or args.rounds:
        wrapper = (GC_WRAPPER if args.gc_trace else "") + (ROUNDS_WRAPPER if args.rounds else "")
        launcher = ["-c", wrapper + RUN_PROXY]
        env["SOAK_ROUNDS"] = str(workdir / "rounds.bin")
    else:
        launcher = ["-m", "proxy"]
    command = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port),
               "--redis", redis_url, "--env", ENV, "--log-level", "warning", *args.proxy_args]
    proxy = subprocess.Popen(pinned(0, command) if args.pin else command, cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    stalled = writer = None
    probe = httpx.AsyncClient(base_url=url, timeout=5.0)
    clients = Clients(url, ckey, args.rate)
    try:
        async def ready() -> bool:
            try:
                return (await probe.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, 30, "proxy ready")
        clients.start()
        await asyncio.sleep(3)  # warm-up phase (discarded): connections, caches
        clients.phase = "before"
        print(f"before: {args.baseline:.0f} s of normal clients alone "
              f"({args.rate:.0f} req/s)", flush=True)
        await asyncio.sleep(args.baseline)

        stalled = subprocess.Popen(
            [sys.executable, __file__, "--stalled", "--port", str(port), "--n",
             str(args.readers), "--ckey", ckey, "--skey", skey],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        background(stalled.pid)
        assert stalled.stdout is not None
        line = await asyncio.to_thread(stalled.stdout.readline)
        if line.strip() != "READY":
            raise RuntimeError(f"stalled readers failed: {line!r}")

        async def all_open() -> bool:
            text = (await probe.get("/metrics")).text
            return metric(text, "flagedge_sse_connections") >= args.readers

        await wait_for(all_open, 30, f"{args.readers} streams open")
        clients.phase = "during"
        gc_before = gc_stats(workdir / "proxy.log") if args.gc_trace else None
        rss: list[tuple[float, float]] = [(0.0, rss_mb(proxy.pid))]
        begin = time.monotonic()
        windows = schedule(begin, args.alternate, args.duration) if args.alternate else []
        storm_url = decoy_url if args.decoy and decoy_url else redis_url
        control_url = decoy_url if windows and args.control == "decoy" else None
        print(f"during: {args.readers} stalled readers open, {args.changes:.0f} changes/s "
              + (f"to {'the decoy Redis' if args.decoy else 'Redis'} in {len(windows) // 2} "
                 f"storm windows of {args.alternate:.0f} s, each after a quiet one ("
                 + ("the same writes to the decoy Redis)" if control_url else "no writes)")
                 if windows else f"for {args.duration:.0f} s"), flush=True)
        print(f"  t={0:5.1f}s  server RSS {rss[0][1]:7.1f} MB", flush=True)
        writer = subprocess.Popen(
            [sys.executable, __file__, "--writer", "--redis", storm_url, "--control-redis",
             control_url or "", "--changes", str(args.changes), "--duration",
             str(args.duration), "--allow-list", str(args.allow_list), "--begin", repr(begin),
             "--alternate", str(args.alternate)],
            stdout=subprocess.PIPE, text=True)
        background(writer.pid)
        started = time.monotonic()
        cpu = [(started, cpu_seconds(proxy.pid))]
        next_sample = 10.0
        while writer.poll() is None:
            await asyncio.sleep(0.2)
            cpu.append((time.monotonic(), cpu_seconds(proxy.pid)))
            t = time.monotonic() - started
            if t >= next_sample:
                rss.append((t, rss_mb(proxy.pid)))
                print(f"  t={t:5.1f}s  server RSS {rss[-1][1]:7.1f} MB, kernel TCP buffers "
                      f"{tcp_kernel_mb():7.1f} MB", flush=True)
                next_sample += 10.0
        clients.phase = "after"
        assert writer.stdout is not None
        wrote = writer.stdout.read().split()
        rss.append((time.monotonic() - started, rss_mb(proxy.pid)))
        print(f"  t={rss[-1][0]:5.1f}s  server RSS {rss[-1][1]:7.1f} MB (end)", flush=True)
        scrape = (await probe.get("/metrics")).text
        await asyncio.sleep(5.5 if args.gc_trace else 0)  # the wrapper's next summary line
        gc_end = gc_stats(workdir / "proxy.log") if args.gc_trace else None
        versions = (await probe.get("/readyz")).json().get("envs", {})
        await clients.stop()
        # Events still going out after the writes stopped: the fan-out's backlog at the end.
        await asyncio.sleep(5)
        late = metric((await probe.get("/metrics")).text, "flagedge_sse_events_total",
                      outcome="sent") - metric(scrape, "flagedge_sse_events_total", outcome="sent")
    finally:
        for p in (stalled, writer):
            if p is not None and p.poll() is None:
                if p is stalled and p.stdin is not None:
                    p.stdin.close()
                p.terminate()
                p.wait(10)
        await probe.aclose()
        stop(proxy)
        log.close()

    before, during = clients.latencies.get("before", []), clients.latencies.get("during", [])
    rss_values = [v for _, v in rss]
    open_end = metric(scrape, "flagedge_sse_connections")
    coalesced = metric(scrape, "flagedge_sse_events_total", outcome="coalesced")
    sent = metric(scrape, "flagedge_sse_events_total", outcome="sent")
    print("\nsummary")
    target = "the decoy" if args.decoy else "the proxy's Redis"
    control = f", and {wrote[3]} to the decoy in the quiet windows" if control_url else ""
    print(f"  changes written: {wrote[1]} ({wrote[2]}/s) to {target}{control}; proxy at "
          f"version {versions.get(ENV)}")
    print(f"  stalled streams still open at the end: {open_end:.0f}/{args.readers}; events "
          f"sent {sent:.0f}, coalesced (queue over its bound) {coalesced:.0f}")
    print(f"  events sent in the 5 s after the last change (fan-out backlog): {late:.0f}")
    for line in scrape.splitlines():
        if line.startswith(("flagedge_sse_events_total{", "flagedge_sse_connections{")):
            print("    " + line)
    print("  server RSS (MB), every 10 s: "
          + ", ".join(f"t={t:.0f}s {v:.1f}" for t, v in rss))
    print(f"    start {rss_values[0]:.1f}, max {max(rss_values):.1f}, end {rss_values[-1]:.1f} "
          f"(growth {rss_values[-1] - rss_values[0]:+.1f}"
          + (f"; t=10 s to end {rss_values[-1] - rss_values[1]:+.1f})"
             if len(rss_values) > 2 else ")"))
    if args.gc_trace:
        print(f"  proxy GC (generation: count/total ms/max ms), before: {gc_before}")
        print(f"                                               at the end: {gc_end}")
    p50b, p99b, p50d, p99d = pct(before, 50), pct(before, 99), pct(during, 50), pct(during, 99)
    print(f"  normal clients before: n={len(before)} p50 {p50b * 1000:.2f} ms p99 "
          f"{p99b * 1000:.2f} ms; errors {clients.errors.get('before', 0)}")
    print(f"  normal clients during: n={len(during)} p50 {p50d * 1000:.2f} ms p99 "
          f"{p99d * 1000:.2f} ms max {max(during, default=float('nan')) * 1000:.2f} ms; "
          f"errors {clients.errors.get('during', 0)}")
    if args.rounds:
        rounds = read_rounds(workdir / "rounds.bin")
        spans = sorted(e - b for b, e in rounds)
        inside, outside = split_by_rounds(clients.starts.get("during", array("d")), during,
                                          rounds)
        print(f"  fan-out passes: {len(rounds)}, wall time p50 {pct(spans, 50) * 1000:.2f} ms "
              f"p99 {pct(spans, 99) * 1000:.2f} ms max {max(spans, default=0) * 1000:.2f} ms")
        for label, values in (("overlapping a pass", inside), ("not overlapping", outside)):
            print(f"  during, {label}: n={len(values)} ({len(values) / max(1, len(during)):.0%})"
                  f" p50 {pct(values, 50) * 1000:.2f} ms p99 {pct(values, 99) * 1000:.2f} ms")
    p99 = {"before": p99b, "during": p99d}
    if windows:
        quiet_p99, storm_p99 = report_alternating(clients.starts.get("during", array("d")),
                                                  during, windows, cpu)
        p99 = {"quiet windows": quiet_p99, "storm windows": storm_p99}
    print(f"  RATIOS during/before: p50 {p50d / p50b:.2f}x, p99 {p99d / p99b:.2f}x "
          f"(RSS max {max(rss_values):.1f} MB)")
    errors = (clients.errors.get("before", 0), clients.errors.get("during", 0))
    rows = goals(errors, open_end, args.readers, rss, p99)
    details = {"args": {k: v for k, v in vars(args).items()
                        if k in ("duration", "readers", "changes", "rate", "baseline",
                                 "allow_list", "alternate", "control", "decoy", "pin")},
               "rss_mb": rss, "changes_written": wrote[1:],
               "events": {"sent": sent, "coalesced": coalesced, "after_last_change": late},
               "p99_ms": {"before": p99b * 1000, "during": p99d * 1000},
               "p50_ms": {"before": p50b * 1000, "during": p50d * 1000}}
    return finish("soak", rows, details)


def report_alternating(starts: array[float], latencies: list[float],
                       windows: list[tuple[float, float, bool]],
                       cpu: list[tuple[float, float]]) -> tuple[float, float]:
    """Quiet against storm windows, pooled, beside the noise floor of the same run; returns
    the pooled p99 of the quiet windows and of the storm windows."""
    per_window = split_by_schedule(starts, latencies, windows, GUARD_S)
    quiet = [w for w, (_, _, storm) in zip(per_window, windows, strict=True) if not storm]
    storms = [w for w, (_, _, storm) in zip(per_window, windows, strict=True) if storm]
    pooled = {}
    for label, group in (("quiet", quiet), ("storm", storms)):
        values = pooled[label] = list(itertools.chain.from_iterable(group))
        print(f"  alternating, {label}: n={len(values)} in {len(group)} windows, p50 "
              f"{pct(values, 50) * 1000:.2f} ms p99 {pct(values, 99) * 1000:.2f} ms max "
              f"{max(values, default=float('nan')) * 1000:.2f} ms; proxy busy "
              f"{busy(cpu, windows, label == 'storm'):.1%} of a core")
    odd, even = (list(itertools.chain.from_iterable(quiet[k::2])) for k in (1, 0))
    # windows run quiet, storm, quiet, ...: zip pairs each storm with the quiet one before it
    above = sum(pct(st, 99) > pct(q, 99) for q, st in zip(quiet, storms, strict=True))
    print(f"  noise floor: quiet windows odd/even p99 {pct(odd, 99) / pct(even, 99):.2f}x; "
          f"storm p99 above the quiet window's before it in {above}/{len(storms)} "
          "(about half when storms do nothing)")
    print(f"  RATIOS storm/quiet: p50 {pct(pooled['storm'], 50) / pct(pooled['quiet'], 50):.2f}x,"
          f" p99 {pct(pooled['storm'], 99) / pct(pooled['quiet'], 99):.2f}x")
    return pct(pooled["quiet"], 99), pct(pooled["storm"], 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of changes")
    parser.add_argument("--readers", type=int, default=1000, help="stalled SSE readers")
    parser.add_argument("--changes", type=float, default=100.0, help="rule changes per second")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="normal clients' evaluations per second")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of normal clients alone, before")
    parser.add_argument("--allow-list", type=int, default=100,
                        help="emails in each targeted flag's rule (100: ~4 KB per change)")
    parser.add_argument("--proxy-arg", dest="proxy_args", action="append", default=[],
                        help="extra `flagedge serve` argument (repeatable), e.g. "
                             "--proxy-arg=--cache-size=100")
    parser.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the proxy (repeatable), e.g. "
                             "--proxy-env FLAGEDGE_SSE_SEND_BUFFER=0")
    parser.add_argument("--alternate", type=float, default=5.0, metavar="SECONDS",
                        help="alternate quiet and storm windows of this length, --duration s "
                             "of each (0: changes run continuously for --duration s)")
    parser.add_argument("--control", choices=("decoy", "idle"), default="decoy",
                        help="what the writer does in the quiet windows: the same writes to "
                             "a second Redis the proxy does not follow (the bench's own load "
                             "in both kinds of window), or nothing")
    parser.add_argument("--decoy", action="store_true",
                        help="the storm windows write to that second Redis too: an A/A run, "
                             "where nothing differs between the windows for the proxy")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the proxy to core 0 and everything else to core 1")
    parser.add_argument("--gc-trace", action="store_true",
                        help="time the proxy's garbage collections (gc.callbacks) and report")
    parser.add_argument("--rounds", action="store_true",
                        help="time the proxy's fan-out passes and split the clients' latencies "
                             "by whether a request overlapped one")
    parser.add_argument("--stalled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ckey", default="", help=argparse.SUPPRESS)
    parser.add_argument("--skey", default="", help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--begin", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--control-redis", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global ALLOW_LIST
    ALLOW_LIST = args.allow_list
    if args.stalled:
        stalled_process(args.port, args.n, args.ckey, args.skey)
        return
    if args.writer:
        writer_process(args.redis, args.control_redis, args.changes, args.duration,
                       args.begin, args.alternate)
        return
    limit = raise_nofile()  # inherited by the server and the reader process
    # The proxy alone on core 0; this process, the readers, the writer and redis-server (all
    # started from here, so they inherit it) on core 1: the clients' latencies then measure
    # the proxy, not the scheduler sharing 2 cores among five busy processes.
    args.pin = args.pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    if args.pin:
        os.sched_setaffinity(0, {1})
    print(f"soak: {args.readers} stalled SSE readers ({'/'.join(STREAMS)}), {args.changes:.0f} "
          f"changes/s for {args.duration:.0f} s, normal clients at {args.rate:.0f} req/s "
          f"(nofile {limit}, {os.cpu_count()} cores"
          + (", proxy on core 0, the rest on core 1)" if args.pin else ", unpinned)"),
          flush=True)
    from proxy.dev.devredis import free_port
    from tests.redis_server import RedisServer

    decoy = args.decoy or (args.alternate > 0 and args.control == "decoy")
    with tempfile.TemporaryDirectory(prefix="flagedge-soak-") as tmp:
        servers = [RedisServer(Path(tmp) / name, port=free_port(), persist=False).start()
                   for name in ("redis", "decoy")[: 2 if decoy else 1]]
        for server in servers:
            assert server.proc is not None
            background(server.proc.pid)
        try:
            code = asyncio.run(soak(args, servers[0].url, Path(tmp),
                                    servers[1].url if decoy else None))
        finally:
            for server in servers:
                server.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
