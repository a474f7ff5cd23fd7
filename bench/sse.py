"""SSE fan-out benchmark: N clients on the OFREP change-notification stream, one push, time
from the Redis write until every client has the event; server RSS per connection.

Starts its own redis-server and one `flagedge serve` process per N (a fresh process, so the
RSS baseline is clean); the clients are a lightweight asyncio raw-socket SSE reader in
another process. In the same run, the same clients against a bare sse-starlette app (one
shared asyncio.Event, no auth, no store) give the baseline: ratios are flagedge / bare.
Goals: 10,000 connections per process; < 20 KB RSS each; p99 < 100 ms at 1,000 clients.

    python bench/sse.py [--clients 1000,5000,10000] [--no-baseline] [--stream events]

``--stream evaluated`` gives every client its own context (the worst case: nothing shared);
``--stream rules`` follows the raw rules stream with a server key.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/sse.py` from a checkout

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import orjson  # noqa: E402
from benchutil import raise_nofile, stop  # noqa: E402

ENV = "bench"
CONNECT_BATCH = 250  # connections opened concurrently (stay under the listen backlog)


# -- the client process ---------------------------------------------------------------------
class _Reader(asyncio.Protocol):
    """Counts the first frame (the stream is open), then stamps the first change event."""

    __slots__ = ("buf", "done", "got_at", "ready", "request", "state")

    def __init__(self, request: bytes, state: dict):
        self.request, self.state = request, state
        self.buf = b""
        self.ready = False
        self.got_at = 0.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.got_at:
            return
        if not self.ready:
            self.buf += data
            head, sep, body = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.state["failed"] += 1
                self.buf = b""
                return
            if b"\n\n" not in body and b"\r\n\r\n" not in body:
                return  # headers arrived, first frame not yet
            self.ready = True
            self.state["ready"] += 1
            data, self.buf = body, b""
            if self.state["ready"] == self.state["n"]:
                self.state["all_ready"].set()
        if self.state["marker"] in data:
            self.got_at = time.time()
            self.state["got"] += 1
            if self.state["got"] == self.state["n"]:
                self.state["all_got"].set()


def stream_path(stream: str, i: int) -> str:
    if stream == "evaluated":  # a distinct context per client: the worst case
        import base64

        ctx = base64.urlsafe_b64encode(orjson.dumps({"targetingKey": f"user-{i}"}))
        return "/v1/stream/evaluated?context=" + ctx.rstrip(b"=").decode()
    return {"events": "/ofrep/v1/events", "rules": "/v1/stream/rules"}[stream]


async def _client_main(port: int, n: int, stream: str, key: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()

    def request(i: int) -> bytes:
        return (f"GET {stream_path(stream, i)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Accept: text/event-stream\r\n"
                + (f"Authorization: Bearer {key}\r\n" if key else "") + "\r\n").encode()

    state = {"n": n, "ready": 0, "got": 0, "failed": 0, "all_ready": asyncio.Event(),
             "all_got": asyncio.Event(),
             "marker": b"event: message" if stream == "events" else b"event: patch"}
    readers: list[_Reader] = []
    transports = []
    for start in range(0, n, CONNECT_BATCH):
        batch = [loop.create_connection(lambda i=i: _Reader(request(i), state), "127.0.0.1",
                                        port) for i in range(start, min(start + CONNECT_BATCH, n))]
        for transport, proto in await asyncio.gather(*batch):
            readers.append(proto)
            transports.append(transport)
    try:
        await asyncio.wait_for(state["all_ready"].wait(), timeout)
    except TimeoutError:
        print(f"ERROR only {state['ready']}/{n} streams open ({state['failed']} refused)",
              flush=True)
        return
    print("READY", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state["all_got"].wait(), timeout)
    print("RESULT " + orjson.dumps({"got": [r.got_at for r in readers if r.got_at],
                                     "missing": n - state["got"]}).decode(), flush=True)
    for t in transports:
        t.close()


def client_process(args: argparse.Namespace) -> None:
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_client_main(args.port, args.n, args.stream, args.key, args.timeout))


# -- servers --------------------------------------------------------------------------------
def bare_app():  # pragma: no cover - runs in the baseline process
    """The least an SSE server can do: one shared event, every stream waits on it."""
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    state = {"event": asyncio.Event(), "version": 1}

    async def stream(_request):
        async def gen():
            yield b"retry: 3000\nid: %d\n\n" % state["version"]
            while True:
                event = state["event"]
                await event.wait()
                v = state["version"]
                yield (b'event: message\nid: %d\ndata: {"type":"refetchEvaluation","etag":"%d"}'
                       b"\n\n" % (v, v))

        return EventSourceResponse(gen(), ping=15)

    async def fire(_request):
        state["version"] += 1
        old, state["event"] = state["event"], asyncio.Event()
        old.set()
        return Response(b"ok")

    async def health(_request):
        return Response(b"ok")

    return Starlette(routes=[Route("/ofrep/v1/events", stream), Route("/fire", fire,
                                                                      methods=["POST"]),
                             Route("/healthz", health)])


def serve_bare(port: int) -> None:  # pragma: no cover
    import uvicorn

    raise_nofile()
    uvicorn.run(bare_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", backlog=4096)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def run_clients(port: int, n: int, key: str, fire, timeout: float = 60.0,
                stream: str = "events") -> dict:
    """Start the client process, wait until every stream is open, measure RSS, fire."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--client", "--port", str(port), "--n", str(n),
         "--key", key, "--stream", stream, "--timeout", str(timeout)],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        raise RuntimeError(f"clients failed: {line}")
    fire_result = fire()
    result_line = proc.stdout.readline().strip()
    proc.wait(30)
    assert result_line.startswith("RESULT "), result_line
    result = orjson.loads(result_line[len("RESULT "):])
    result.update(fire_result)
    return result


def measure(label: str, server_pid: int, port: int, n: int, key: str, fire_fn,
            stream: str = "events") -> dict:
    base = rss_kb(server_pid)
    holder: dict = {}

    def fire() -> dict:
        holder["rss_open"] = rss_kb(server_pid)
        t0 = time.time()
        fire_fn()
        return {"t0": t0}

    res = run_clients(port, n, key, fire, stream=stream)
    lat = [(t - res["t0"]) * 1000 for t in res["got"]]
    out = {
        "label": label, "n": n, "missing": res["missing"],
        "p50": percentile(lat, 50) if lat else float("nan"),
        "p99": percentile(lat, 99) if lat else float("nan"),
        "max": max(lat) if lat else float("nan"),
        "rss_per_conn_kb": (holder["rss_open"] - base) / n,
        "rss_base_mb": base / 1024, "rss_open_mb": holder["rss_open"] / 1024,
    }
    print(f"  {label:9s} N={n:6d}  p50 {out['p50']:7.1f} ms  p99 {out['p99']:7.1f} ms  "
          f"max {out['max']:7.1f} ms  RSS/conn {out['rss_per_conn_kb']:5.1f} KB  "
          f"(RSS {out['rss_base_mb']:.0f} -> {out['rss_open_mb']:.0f} MB)  "
          f"missing {out['missing']}", flush=True)
    return out


def bench_flagedge(n: int, redis_url: str, workdir: Path, stream: str = "events") -> dict:
    import redis

    from proxy.dev.devredis import free_port
    from proxy.release import publisher
    from proxy.storage import keys

    client = redis.Redis.from_url(redis_url)
    doc = {"flags": {f"f{i}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                               "defaultVariant": "on"} for i in range(20)}}
    publisher.push(client, ENV, publisher.parse_document(orjson.dumps(doc), source="bench"),
                   author="bench")
    raw_key, _ = keys.create(client, ENV, "server" if stream == "rules" else "client", "bench")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")},
           "FLAGEDGE_SSE_MAX_CONNECTIONS": str(n + 100),
           "FLAGEDGE_SSE_MAX_PER_KEY": str(n + 100), "FLAGEDGE_ACCESS_LOG": "false"}
    log = (workdir / f"proxy-{n}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--redis", redis_url, "--env", ENV,
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        import httpx

        for _ in range(20):  # warm up the request path
            httpx.post(f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags", json={},
                       headers={"Authorization": f"Bearer {raw_key}"})
        counter = {"i": 0}

        def fire() -> None:  # the Redis write (one Lua script) that clients must see
            counter["i"] += 1
            changed = {"flags": {**doc["flags"], "f0": {
                "state": "ENABLED", "variants": {"on": True, "off": False},
                "defaultVariant": "off" if counter["i"] % 2 else "on"}}}
            publisher.push(client, ENV, publisher.parse_document(orjson.dumps(changed),
                                                                 source="bench"),
                           author="bench")

        return measure("flagedge", proc.pid, port, n, raw_key, fire, stream)
    finally:
        stop(proc)
        log.close()


def bench_bare(n: int) -> dict:
    import httpx

    from proxy.dev.devredis import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--bare", "--port", str(port)], cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        return measure("bare", proc.pid, port, n, "",
                       lambda: httpx.post(f"http://127.0.0.1:{port}/fire"))
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1000,5000,10000")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--stream", default="events", choices=["events", "evaluated", "rules"],
                        help="which stream the clients follow (the bare baseline: events)")
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_process(args)
        return
    if args.bare:
        serve_bare(args.port)
        return
    limit = raise_nofile()  # inherited by the server and client processes
    sizes = [int(x) for x in args.clients.split(",")]
    print(f"SSE fan-out: one push, N clients on the {args.stream} stream (nofile {limit}, "
          f"{os.cpu_count()} cores)", flush=True)
    from proxy.dev.devredis import free_port
    from tests.redis_server import RedisServer

    results = []
    with tempfile.TemporaryDirectory(prefix="flagedge-bench-sse-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", port=free_port(), persist=False).start()
        try:
            for n in sizes:
                fe = bench_flagedge(n, redis_server.url, Path(tmp), args.stream)
                bare = None if args.no_baseline else bench_bare(n)
                results.append((fe, bare))
        finally:
            redis_server.stop()
    print("\nsummary (latency: Redis write -> every client has the event)")
    print(f"{'N':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'KB/conn':>8} "
          f"{'p99/bare':>9} {'KB/bare':>8}")
    for fe, bare in results:
        r1 = fe["p99"] / bare["p99"] if bare and bare["p99"] else float("nan")
        r2 = fe["rss_per_conn_kb"] / bare["rss_per_conn_kb"] if bare and bare[
            "rss_per_conn_kb"] > 0 else float("nan")
        print(f"{fe['n']:>6} {fe['p50']:>8.1f} {fe['p99']:>8.1f} {fe['max']:>8.1f} "
              f"{fe['rss_per_conn_kb']:>8.1f} {r1:>9.2f} {r2:>8.2f}")
    ok = all(fe["missing"] == 0 for fe, _ in results)
    goal_mem = all(fe["rss_per_conn_kb"] < 20 for fe, _ in results)
    at_1000 = [fe for fe, _ in results if fe["n"] == 1000]
    goal_p99 = all(fe["p99"] < 100 for fe in at_1000)
    print(f"goals: every client got it: {ok}; <20 KB/conn: {goal_mem}; "
          f"p99 <100 ms at 1,000: {goal_p99 if at_1000 else 'not run'}")


if __name__ == "__main__":
    main()
