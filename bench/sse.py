"""SSE fan-out benchmark: one Redis write to N stream clients, flagedge vs a bare SSE app.

The time from the write until each client has the event, and the server's RSS per stream;
flagedge against a bare SSE app, same run, same trigger.

Pinned like bench/ofrep_http.py: the server under test (``flagedge serve`` with its default
settings, or the baseline) on core 0 (taskset); the client process, Redis and this driver on
core 1. The clients (bench/sse_client.py) are one lean asyncio raw-socket reader per stream.

Both servers are triggered the same way: the driver writes the flag document to Redis (one
``publisher.write``, the Lua script ``flagedge push`` runs) and stamps the time just before it;
each client stamps the time it reads the event. flagedge follows Redis with its own source
(XREAD on the environment's change stream); the baseline (bench/sse_baseline.py) is a bare
Starlette app with one task doing the same XREAD and waking every stream's generator.

Each case opens N streams on a fresh server process (so its RSS before the streams is clean),
then runs ``--rounds`` writes spaced by more than ``sse_coalesce_ms`` (each one a leading edge,
as a lone push is). Two statistics: "p99" pools every (round, client) notification time, so a
round that one garbage collection slowed counts in full (the absolute goals use it); "median
round p99" is the median over rounds of each write's own p99, one write's typical tail (the
ratios use it, on both sides, so one unlucky round of either server does not decide them).
Each write flips the variants of a flag with fractional
targeting, so every context's value changes: every evaluated stream gets a patch, and each
context is evaluated for real (a hash per context, not a shared static result).

"Matching baseline" per stream: the baseline sends each client a frame of the same size in
bytes as flagedge's frame for that stream in the same run (the clients measure it):
- events, rules: one frame built once per change and shared by every stream (flagedge too
  encodes these once per change);
- evaluated: a frame built per client (its own bytes; the client's context in it), since
  flagedge's evaluated stream is one result per context.
So the ratio is what flagedge's machinery costs on top of HTTP + one Redis follower +
the bytes themselves: auth, the store, change decoding, evaluation, queues, diffs.

Goals (issue 21):
- events, 10,000 clients: p99 <= 200 ms from the Redis write to every client notified, and
  server RSS <= 20 KB per stream; events, 1,000 clients: p99 <= 50 ms.
- rules and evaluated (10,000 clients): p99 (median round) <= 2x the matching baseline. Why
  2x: the baseline does no per-client work beyond the bytes, while these two streams must
  turn the change into a patch (rules) and evaluate every context and diff it against what
  that client holds (evaluated). 2x lets that work cost as much again as all of HTTP, the
  event loop and the bytes sent, and still catches a fan-out that wakes a task or copies a
  queue per client, or goes quadratic. Tighter would tie the goal to this machine's ratio
  of Python to syscall cost; looser would let the evaluated stream drift unnoticed. (Today
  flagedge is below 1x: it writes to idle sockets straight from the fan-out instead of
  waking a generator per stream.)
- No notification missed.

    python bench/sse.py [--rounds 5] [--clients N,...] [--streams events,rules,evaluated]
                        [--compare DIR] [--py-spy PATH]

``--clients 1000`` (make bench's quick run) runs every stream at 1,000 clients: the events
goal at 1,000 and both ratios are checked, the 10,000-client goals are not.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder is sys.path[0]: keep it (benchutil, report) behind the
# project root, so ``proxy`` imports from this checkout.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT), str(_HERE)] + [p for p in sys.path
                                         if Path(p or ".").resolve() not in (_HERE, ROOT)]

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
from benchutil import pinned, raise_nofile, stop  # noqa: E402
from report import Row, at_most, finish  # noqa: E402

ENV = "bench"
SERVER_CORE, CLIENT_CORE = 0, 1
ROUND_GAP_S = 0.3  # > sse_coalesce_ms (100 ms): every write is a leading edge, sent at once
ROUND_TIMEOUT_S = 30.0
KEY_KIND = {"events": "client", "evaluated": "client", "rules": "server"}
# The settings flagedge must have for the bench to run at all: every client comes from
# 127.0.0.1, and one key opens all N streams. Everything else stays at its default.
DEFAULT_MAX_PER_KEY, DEFAULT_MAX_CONNECTIONS = 10_000, 20_000


# -- the workload ---------------------------------------------------------------------------
def flag_document(flip: bool) -> dict:
    """20 flags; ``f0`` splits contexts 50/50 by targeting key and ``flip`` swaps the values
    of its variants, so every context's result changes with every write."""
    flags: dict[str, Any] = {f"f{i}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                       "defaultVariant": "on"} for i in range(1, 20)}
    flags["f0"] = {"state": "ENABLED", "variants": {"on": not flip, "off": flip},
                   "defaultVariant": "off",
                   "targeting": {"fractional": [["on", 50], ["off", 50]]}}
    return {"flags": flags}


class Writer:
    """The trigger: one flag-document write to Redis, the same for both servers."""

    def __init__(self, redis_url: str):
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.flip = False

    def push(self) -> float:
        """Write the next document; the time (monotonic) just before the write."""
        from proxy.release import publisher

        self.flip = not self.flip
        doc = publisher.parse_document(orjson.dumps(flag_document(self.flip)), source="bench")
        _state, plan = publisher.diff(self.client, ENV, doc)  # the reads a push does first
        t0 = time.monotonic()
        result = publisher.write(self.client, ENV, plan, author="bench")
        assert result.status == "ok", result
        return t0


# -- one case: N streams on one server ------------------------------------------------------
@dataclass
class Measured:
    server: str  # "flagedge" | "baseline"
    stream: str
    n: int
    latencies_ms: list[float] = field(default_factory=list)  # every (round, client)
    round_p99_ms: list[float] = field(default_factory=list)
    missing: int = 0
    frame_bytes: float = 0.0
    client_cpu_ms: list[float] = field(default_factory=list)
    rss_before_kb: int = 0
    rss_open_kb: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def round_p99(self) -> float:
        """The median over rounds of each write's p99: one write's typical tail, unmoved by
        a single round that a garbage collection (on either server) happened to hit."""
        return statistics.median(self.round_p99_ms) if self.round_p99_ms else float("nan")

    @property
    def kb_per_stream(self) -> float:
        return (self.rss_open_kb - self.rss_before_kb) / self.n

    def summary(self) -> dict:
        return {"server": self.server, "stream": self.stream, "n": self.n,
                "p50_ms": round(self.p50, 2), "p99_ms": round(self.p99, 2),
                "median_round_p99_ms": round(self.round_p99, 2),
                "max_ms": round(max(self.latencies_ms, default=float("nan")), 2),
                "round_p99_ms": [round(x, 2) for x in self.round_p99_ms],
                "missing": self.missing, "frame_bytes": round(self.frame_bytes, 1),
                "client_cpu_ms": [round(x, 1) for x in self.client_cpu_ms],
                "rss_before_mb": round(self.rss_before_kb / 1024, 1),
                "rss_open_mb": round(self.rss_open_kb / 1024, 1),
                "kb_per_stream": round(self.kb_per_stream, 2)}

    def line(self) -> str:
        s = self.summary()
        return (f"  {self.server:9s} {self.stream:9s} N={self.n:6d}  p50 {s['p50_ms']:7.1f} ms"
                f"  p99 {s['p99_ms']:7.1f} ms (median round {s['median_round_p99_ms']:6.1f})  max {s['max_ms']:7.1f} ms  rounds p99 "
                f"{s['round_p99_ms']}  {s['kb_per_stream']:5.1f} KB/stream  frame "
                f"{s['frame_bytes']:.0f} B  client cpu/round {s['client_cpu_ms']} ms  "
                f"missing {self.missing}")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_pid(proc: subprocess.Popen) -> int:
    """The Python process under ``taskset`` (which execs it: the same pid)."""
    return proc.pid


def start_profiler(py_spy: str, pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling the server during the rounds (on the clients' core), collapsed stacks
    to ``out``; stopped with SIGINT. A diagnostic: py-spy is no project dependency."""
    return subprocess.Popen(pinned(CLIENT_CORE, [
        py_spy, "record", "--pid", str(pid), "--rate", "1000", "--format", "raw",
        "--output", str(out), "--nonblocking"]), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def run_rounds(out: Measured, pid: int, port: int, key: str, writer: Writer, rounds: int,
               profile: tuple[str, Path] | None = None) -> Measured:
    """Open the streams (client process on CLIENT_CORE), then ``rounds`` writes."""
    client = subprocess.Popen(
        pinned(CLIENT_CORE, [sys.executable, __file__, "--client", "--port", str(port),
                             "--n", str(out.n), "--key", key, "--stream", out.stream]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    try:
        out.rss_before_kb = rss_kb(pid)
        line = client.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"{out.server} {out.stream} N={out.n}: clients: {line!r}")
        out.rss_open_kb = rss_kb(pid)
        profiler = start_profiler(profile[0], pid, profile[1]) if profile else None
        if profiler is not None:
            time.sleep(1.0)  # py-spy attaches
        for _ in range(rounds):
            time.sleep(ROUND_GAP_S)
            client.stdin.write("ARM\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "ARMED"
            t0 = writer.push()
            line = client.stdout.readline().strip()
            assert line.startswith("RESULT "), line
            result = orjson.loads(line[len("RESULT "):])
            lat = [(t - t0) * 1000 for t in result["got"]]
            out.latencies_ms += lat
            out.round_p99_ms.append(percentile(lat, 99))
            out.missing += result["missing"]
            out.frame_bytes = result["frame_bytes"]
            out.client_cpu_ms.append(result["client_cpu_ms"])
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        client.stdin.write("QUIT\n")
        client.stdin.flush()
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    print(out.line(), flush=True)
    return out


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def flagedge_env(n: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env["FLAGEDGE_SSE_MAX_PER_ADDRESS"] = str(n)
    if n > DEFAULT_MAX_PER_KEY:
        env["FLAGEDGE_SSE_MAX_PER_KEY"] = str(n)
    if n > DEFAULT_MAX_CONNECTIONS:
        env["FLAGEDGE_SSE_MAX_CONNECTIONS"] = str(n)
    return env


def measure_flagedge(stream: str, n: int, redis_url: str, writer: Writer, rounds: int,
                     logs: Path, py_spy: str = "", checkout: Path = ROOT,
                     label: str = "flagedge") -> Measured:
    import httpx

    from proxy.dev.devredis import free_port
    from proxy.storage import keys

    raw_key, _ = keys.create(writer.client, ENV, KEY_KIND[stream], f"bench-{stream}-{n}")
    port = free_port()
    env = {**flagedge_env(n), "PYTHONPATH": str(checkout)}
    with (logs / f"{label}-{stream}-{n}.log").open("wb") as log:
        proc = subprocess.Popen(pinned(SERVER_CORE, [
            sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--redis", redis_url, "--env", ENV]), cwd=checkout, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc)
            for _ in range(20):  # warm the request path before the RSS baseline
                httpx.post(f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags", json={},
                           headers={"Authorization": f"Bearer {raw_key}"}, timeout=10)
            profile = (py_spy, Path(f"sse-profile-{stream}-{n}.txt").resolve()) if py_spy \
                else None
            return run_rounds(Measured(label, stream, n), server_pid(proc), port, raw_key,
                              writer, rounds, profile)
        finally:
            stop(proc)


def measure_baseline(stream: str, n: int, redis_url: str, writer: Writer, rounds: int,
                     payload: int) -> Measured:
    from proxy.dev.devredis import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--baseline", "--port", str(port), "--redis", redis_url,
           "--payload", str(payload)] + (["--per-client"] if stream == "evaluated" else [])
    proc = subprocess.Popen(pinned(SERVER_CORE, cmd), cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return run_rounds(Measured("baseline", stream, n), server_pid(proc), port, "", writer,
                          rounds)
    finally:
        stop(proc)


# -- goals ----------------------------------------------------------------------------------
EVENTS_P99_MS = {10_000: 200.0, 1_000: 50.0}
EVENTS_KB_PER_STREAM = 20.0
STREAM_RATIO = 2.0


def case_rows(fe: Measured, base: Measured) -> list[Row]:
    ratio = fe.round_p99 / base.round_p99 if base.round_p99 else float("inf")
    vs = (f"baseline p99 {base.p99:.1f} ms; median round p99 {fe.round_p99:.1f} / "
          f"{base.round_p99:.1f} ms = {ratio:.2f}x")
    what = f"{fe.stream}, {fe.n:,} clients:"
    rows = []
    if fe.stream == "events":
        goal = EVENTS_P99_MS.get(fe.n)
        if goal is not None:
            rows.append(at_most(f"{what} p99 Redis write -> all notified", fe.p99, goal, vs,
                                unit="ms"))
        if fe.n == max(EVENTS_P99_MS):
            rows.append(at_most(f"{what} server RSS per stream", fe.kb_per_stream,
                                EVENTS_KB_PER_STREAM,
                                f"baseline {base.kb_per_stream:.1f} KB", unit="KB"))
    else:
        rows.append(at_most(f"{what} p99 flagedge / matching baseline", ratio, STREAM_RATIO,
                            f"median round p99 {fe.round_p99:.1f} / {base.round_p99:.1f} ms "
                            f"({base.frame_bytes:.0f} B frames; pooled p99 {fe.p99:.1f} / "
                            f"{base.p99:.1f} ms)", unit="x"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="writes per case")
    parser.add_argument("--clients", metavar="N[,N...]",
                        help="client counts for every stream (default: the goals' cases: "
                             "events 1000 and 10000, rules and evaluated 10000)")
    parser.add_argument("--streams", default="events,rules,evaluated")
    parser.add_argument("--py-spy", default="", metavar="PATH",
                        help="profile flagedge during the rounds with this py-spy binary "
                             "(collapsed stacks: ./sse-profile-STREAM-N.txt)")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="also measure the flagedge of another checkout (e.g. a worktree "
                             "of the commit before a change) in each case, for before/after "
                             "figures from the same run; no goal rows for it")
    internal = parser.add_argument_group("internal (the client and baseline processes)")
    internal.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    internal.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    internal.add_argument("--key", default="", help=argparse.SUPPRESS)
    internal.add_argument("--stream", default="events", help=argparse.SUPPRESS)
    internal.add_argument("--redis", default="", help=argparse.SUPPRESS)
    internal.add_argument("--payload", type=int, default=0, help=argparse.SUPPRESS)
    internal.add_argument("--per-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        import sse_client

        sse_client.main(args.port, args.n, args.stream, args.key, ROUND_TIMEOUT_S)
        return 0
    if args.baseline:
        import sse_baseline

        sse_baseline.serve(args.port, args.redis, ENV, args.payload, args.per_client)
        return 0
    return run(args)


DEFAULT_CLIENTS = {"events": (1_000, 10_000), "rules": (10_000,), "evaluated": (10_000,)}


def cases(streams: str, clients: str | None) -> list[tuple[str, int]]:
    """(stream, N) in run order: ``clients`` for every stream, else DEFAULT_CLIENTS."""
    out = []
    for stream in (s.strip() for s in streams.split(",") if s.strip()):
        if stream not in DEFAULT_CLIENTS:
            raise SystemExit(f"unknown stream {stream!r}")
        sizes = [int(n) for n in clients.split(",")] if clients else DEFAULT_CLIENTS[stream]
        out += [(stream, n) for n in sizes]
    return out


def run(args: argparse.Namespace) -> int:
    limit = raise_nofile()  # inherited by the servers and the client process
    if (os.cpu_count() or 1) > CLIENT_CORE:
        os.sched_setaffinity(0, {CLIENT_CORE})  # this driver and Redis stay off the server's
    print(f"SSE fan-out: {args.rounds} Redis writes per case; server on core {SERVER_CORE}, "
          f"clients + Redis on core {CLIENT_CORE} (nofile {limit})", flush=True)
    from proxy.dev.devredis import free_port
    from proxy.release import publisher
    from tests.redis_server import RedisServer

    rows: list[Row] = []
    details: dict[str, Any] = {"rounds": args.rounds, "cases": []}
    missing = 0
    with tempfile.TemporaryDirectory(prefix="flagedge-bench-sse-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", port=free_port(), persist=False).start()
        try:
            writer = Writer(redis_server.url)
            publisher.push(writer.client, ENV, publisher.parse_document(
                orjson.dumps(flag_document(False)), source="bench"), author="bench")
            for stream, n in cases(args.streams, args.clients):
                fe = measure_flagedge(stream, n, redis_server.url, writer, args.rounds,
                                      Path(tmp), args.py_spy)
                case: dict[str, Any] = {"flagedge": fe.summary()}
                if args.compare:
                    other = measure_flagedge(stream, n, redis_server.url, writer, args.rounds,
                                             Path(tmp), checkout=args.compare.resolve(),
                                             label="compared")
                    case["compared"] = {**other.summary(), "checkout": str(args.compare)}
                    print(f"  this / compared checkout: median round p99 "
                          f"{fe.round_p99 / other.round_p99:.2f}x", flush=True)
                base = measure_baseline(stream, n, redis_server.url, writer, args.rounds,
                                        round(fe.frame_bytes))
                rows += case_rows(fe, base)
                missing += fe.missing + base.missing
                details["cases"].append({**case, "baseline": base.summary()})
        finally:
            redis_server.stop()
    rows.append(at_most("notifications missed (flagedge and baseline, all cases)", missing, 0))
    return finish("sse", rows, details)


if __name__ == "__main__":
    sys.exit(main())
