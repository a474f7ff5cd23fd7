"""flagd sync benchmark (issue 22): one Redis write to 1,000 SyncFlags streams, against 1,000
``/v1/stream/rules`` SSE clients of the same server in the same run, and the Python flagd
provider's CONFIGURATION_CHANGED after a write.

One `flagedge serve --sync-port` (default settings but the SSE per-address cap) on its own
redis-server; the streams are grpc.aio calls in this process (over CHANNELS connections),
the SSE clients raw asyncio sockets in this process too, in two phases: the sync streams
alone, then the SSE clients alone, so neither fan-out competes with the other. Each round the driver stamps the time, writes a new flag
document to Redis (as `flagedge push` does) and waits until every stream and every SSE
client has it; a client's time is when it read the new document. Memory per stream: the
server's RSS with a phase's streams open minus before them, divided by their number.

The provider: ``openfeature-provider-flagd`` 0.5.2 (its venv under .cache/, as the tests make
it) in in-process mode; each of ``--pushes`` writes is timed from the write to the event's
own timestamp in the provider process. Writes are 0.3 s apart (more than the 100 ms
coalescing window: each is a lone push). The provider's own 600 s stream renewal is not
excluded: a run this short (~40 s) does not meet one; it would show as one slow push.

Goal: Redis write -> every sync stream has the new document, p99 <= 100 ms (1,000 streams);
the SSE figures are the same-run baseline. Memory per stream and the provider's p50/p99 are
reported (no goal).

    python bench/sync.py [--streams 1000] [--rounds 5] [--pushes 100]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT), str(_HERE)] + [p for p in sys.path
                                         if Path(p or ".").resolve() not in (_HERE, ROOT)]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
import redis  # noqa: E402
from benchutil import raise_nofile, stop  # noqa: E402
from report import Row, at_most, finish  # noqa: E402

from proxy.dev.devredis import free_port, start_redis  # noqa: E402
from proxy.release import publisher  # noqa: E402
from proxy.storage import keys  # noqa: E402
from proxy.sync import sync_pb2, sync_pb2_grpc  # noqa: E402

ENV = "bench"
CHANNELS = 10
GOAL_P99_MS = 100.0
SPACING_S = 0.3  # between writes: more than sse_coalesce_ms, so each is a lone push


def document(round_no: int, n_flags: int = 20) -> dict[str, Any]:
    flags = {f"flag-{i}": {"state": "ENABLED", "variants": {"a": f"a{round_no}", "b": "b"},
                           "defaultVariant": "a",
                           "targeting": {"fractional": [["a", 50], ["b", 50]]}}
             for i in range(n_flags)}
    return {"flags": flags}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def push(client: Any, round_no: int) -> float:
    """Write round ``round_no``'s document; the time just before the write."""
    doc = publisher.parse_document(orjson.dumps(document(round_no)), source="bench")
    at = time.time()
    publisher.push(client, ENV, doc, author="bench")
    return at


class Clients:
    """Every stream's and SSE client's latest round seen and when."""

    def __init__(self, n: int):
        self.sync = [(-1, 0.0)] * n
        self.sse = [(-1, 0.0)] * n
        self.changed = asyncio.Event()

    def saw(self, kind: str, i: int, round_no: int) -> None:
        getattr(self, kind)[i] = (round_no, time.time())
        self.changed.set()

    async def all_at(self, round_no: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all(r >= round_no for r, _ in self.sync + self.sse):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                late_sync = sum(r < round_no for r, _ in self.sync)
                late_sse = sum(r < round_no for r, _ in self.sse)
                raise TimeoutError(f"round {round_no}: {late_sync} streams and {late_sse} SSE "
                                   "clients did not get it")
            await asyncio.wait_for(self.changed.wait(), left)


def round_of(text: str) -> int:
    marker = text.find('"a":"a')
    if marker < 0:
        return -1
    end = text.find('"', marker + 6)
    return int(text[marker + 6:end])


async def follow_sync(stub: Any, key: str, i: int, clients: Clients) -> None:
    call = stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id=key))
    async for message in call:
        clients.saw("sync", i, round_of(message.flag_configuration))


async def follow_sse(port: int, key: str, i: int, clients: Clients) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/stream/rules HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {key}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    buffer = b""
    while chunk := await reader.read(65536):
        buffer += chunk
        while b"\n\n" in buffer or b"\r\n\r\n" in buffer:
            cut = buffer.find(b"\n\n")
            frame, buffer = buffer[:cut], buffer[cut + 2:]
            text = frame.decode(errors="replace")
            if '"a":"a' in text.replace(" ", ""):
                clients.saw("sse", i, round_of(text.replace(" ", "")))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def rounds_of(kind: str, clients: Clients, client: Any, first: int, rounds: int
                    ) -> list[float]:
    out: list[float] = []
    for round_no in range(first, first + rounds):
        await asyncio.sleep(SPACING_S)  # pacing, not synchronisation
        at = await asyncio.to_thread(push, client, round_no)
        await clients.all_at(round_no)
        out += [(t - at) * 1000 for _, t in getattr(clients, kind)]
    return out


async def close(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def fan_out(server: subprocess.Popen[bytes], sync_port: int, http_port: int, key: str,
                  client: Any, n: int, rounds: int) -> dict[str, Any]:
    """Two phases on one server: n sync streams alone, then n SSE clients alone (each
    fan-out measured without the other competing for the two cores)."""
    clients = Clients(n)
    clients.sse = [(1 << 30, 0.0)] * n  # not in this phase
    before = rss_kb(server.pid)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{sync_port}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    stubs = [sync_pb2_grpc.FlagSyncServiceStub(c) for c in channels]
    tasks = [asyncio.create_task(follow_sync(stubs[i % CHANNELS], key, i, clients))
             for i in range(n)]
    await clients.all_at(0, timeout=60)
    sync_kb = (rss_kb(server.pid) - before) / n
    sync_ms = await rounds_of("sync", clients, client, 1, rounds)
    await close(tasks)
    for channel in channels:
        await channel.close()

    clients.sync, clients.sse = [(1 << 30, 0.0)] * n, [(-1, 0.0)] * n
    before = rss_kb(server.pid)
    tasks = [asyncio.create_task(follow_sse(http_port, key, i, clients)) for i in range(n)]
    await clients.all_at(rounds, timeout=60)
    sse_kb = (rss_kb(server.pid) - before) / n
    sse_ms = await rounds_of("sse", clients, client, rounds + 1, rounds)
    await close(tasks)
    return {"sync_ms": sync_ms, "sse_ms": sse_ms, "sync_kb": sync_kb, "sse_kb": sse_kb}


def provider_latencies(sync_port: int, key: str, client: Any, pushes: int,
                       workdir: Path) -> list[float]:
    from tests.integration.sync.providers import PY_DRIVER, ProviderProcess, python_provider

    process = ProviderProcess([str(python_provider("0.5.2")), str(PY_DRIVER), "127.0.0.1",
                               str(sync_port), key], workdir / "provider.log")
    try:
        process.wait_event("started", timeout=60)
        out = []
        for i in range(pushes):
            time.sleep(SPACING_S)  # pacing, not synchronisation
            count = process.count("PROVIDER_CONFIGURATION_CHANGED")
            at = push(client, 1000 + i)
            process.wait_event("PROVIDER_CONFIGURATION_CHANGED", count + 1)
            event = [e for e in process.events
                     if e["event"] == "PROVIDER_CONFIGURATION_CHANGED"][count]
            out.append((event["at"] - at) * 1000)
        return out
    finally:
        process.close()


def serve(redis_url: str, http_port: int, sync_port: int, workdir: Path
          ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--redis", redis_url,
                             "--port", str(http_port), "--sync-port", str(sync_port),
                             "--host", "127.0.0.1", "--no-access-log", "--log-level",
                             "warning",
                             # every SSE client comes from 127.0.0.1 (the default cap is 100)
                             "--sse-max-per-address", "100000"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("flagedge serve did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pushes", type=int, default=100)
    args = parser.parse_args()
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="flagedge-bench-sync-"))
    redis_proc, redis_port = start_redis(workdir / "redis")
    url = f"redis://127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(url)
    server = None
    try:
        push(client, 0)
        key, _ = keys.create(client, ENV, "server", "bench")
        http_port, sync_port = free_port(), free_port()
        server = serve(url, http_port, sync_port, workdir)
        fan = asyncio.run(fan_out(server, sync_port, http_port, key, client, args.streams,
                                  args.rounds))
        provider = provider_latencies(sync_port, key, client, args.pushes, workdir)
    finally:
        if server is not None:
            stop(server)
        stop(redis_proc)
    sync_p99, sse_p99 = pct(fan["sync_ms"], 99), pct(fan["sse_ms"], 99)
    details = {
        "streams": args.streams, "rounds": args.rounds, "pushes": args.pushes,
        "sync_p50_ms": pct(fan["sync_ms"], 50), "sync_p99_ms": sync_p99,
        "sse_p50_ms": pct(fan["sse_ms"], 50), "sse_p99_ms": sse_p99,
        "server_rss_kb_per_sync_stream": fan["sync_kb"],
        "server_rss_kb_per_sse_stream": fan["sse_kb"],
        "provider_changed_p50_ms": statistics.median(provider),
        "provider_changed_p99_ms": pct(provider, 99),
    }
    print(orjson.dumps(details, option=orjson.OPT_INDENT_2).decode())
    rows: list[Row] = [at_most(
        f"Redis write -> all {args.streams} SyncFlags streams, p99", sync_p99, GOAL_P99_MS,
        baseline=f"{args.streams} /v1/stream/rules SSE clients, same run: p99 {sse_p99:.1f} ms",
        unit="ms")]
    return finish("sync", rows, details)


if __name__ == "__main__":
    raise SystemExit(main())
