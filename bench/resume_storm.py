"""Resume storm: 1,000 stream resumes with random old ``Last-Event-ID``s from one
client key while normal clients evaluate; their p99 against a quiet run (issue 20).

A ``Last-Event-ID`` is chosen by the client, and the client key ships in browsers. Before
issue 20 an id older than the memory ring made the proxy walk up to 10,000 Redis change
entries and recompile the environment on the event loop, per request. Now client-key streams
resume from memory only, and rules streams (server keys) read a bounded, shared log.

One `flagedge serve` (defaults, one worker, core 0) on a redis-server of its own, with 50
flags and 1,500 versions of history (the ring holds 1,024). Normal clients: paced loops of
bulk OFREP requests (``--rate`` per second in all) in a process on core 1, on soak.py's bare
HTTP/1.1 client (httpx's own jitter made the quiet p99 4.5-5.5 ms, against 0.66-1.33 now).
The storm: another process on core 1 opening evaluated and events streams with genuine old
state ids (the worst case: each names a real version, so nothing is refused early), reading
the first event, closing:
``--resumes`` of them spread over the normal clients' run. (A flood at the worker's full
speed is the per-key ``rate_limit``'s to bound, as for any request.)
Goal: storm p99 <= 1.5x quiet p99. Exit 1 when missed.

    python bench/resume_storm.py [--resumes 1000] [--concurrency 20] [--rate 200]
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
import base64  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402
import orjson  # noqa: E402
import soak  # noqa: E402
from benchutil import pinned, stop  # noqa: E402
from report import at_least, at_most, finish  # noqa: E402

ENV = "bench"
FLAGS = 50
HISTORY = 1_500
GOAL = 1.5


def document(n: int) -> dict:
    flags = {f"f{i}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on" if (i + n) % 3 else "off",
                       "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", f"p{i}"]]},
                                            "on", None]}}
             for i in range(FLAGS)}
    return {"flags": flags}


def state_ids(redis_url: str) -> list[str]:
    """Every version's id as this checkout's proxy names it (bare versions before issue 20)."""
    import redis

    from proxy.storage import layout
    try:
        from proxy.model import state_id
    except ImportError:  # the previous release: ids were versions
        def state_id(version: int, _epoch: str, _revision: str) -> str:  # type: ignore[misc]
            return str(version)
    client = redis.Redis.from_url(redis_url)
    ids = [state_id(int(f[b"version"]), f[b"epoch"].decode(), i.decode())
           for i, f in client.xrange(layout.changes_key(ENV))]
    client.close()
    return ids


class BulkClients(soak.Clients):
    """soak's bare HTTP/1.1 clients, bulk requests only, for one of 5,000 users each. With
    httpx here the quiet rounds' p99 was 4.5-5.5 ms for a ~25 us request: the client's own
    CPU and jitter on its shared core, which diluted what the storm costs the server."""

    def _requests(self, w: int) -> list[bytes]:
        return [self.post("/ofrep/v1/evaluate/flags",
                          {"targetingKey": f"user-{(w * 200 + i) % 5000}", "plan": "free"})
                for i in range(200)]  # the cycle each loop walks through


def normal_clients(url: str, key: str, rate: float, seconds: float, out: multiprocessing.Queue
                   ) -> None:
    async def run() -> list[float]:
        clients = BulkClients(url, key, rate)
        clients.phase = "run"
        clients.start()
        await asyncio.sleep(seconds)  # the run's length (pacing, not synchronisation)
        await clients.stop()
        if clients.errors:
            raise SystemExit(f"normal clients: {clients.errors} failed requests")
        return clients.latencies["run"]

    out.put(asyncio.run(run()))


def storm(port: int, key: str, ids: list[str], resumes: int, concurrency: int, seconds: float,
          kinds: str, out: multiprocessing.Queue) -> None:
    """Raw sockets, so the attacker's own CPU stays small beside the normal clients': open,
    send the request, read until the first event, close."""
    ctx = base64.urlsafe_b64encode(orjson.dumps({"plan": "pro"})).rstrip(b"=").decode()

    async def one(i: int) -> None:
        evaluated = kinds == "evaluated" or (kinds == "both" and i % 2)
        path = f"/v1/stream/evaluated?context={ctx}" if evaluated else "/ofrep/v1/events"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
                      f"Last-Event-ID: {random.choice(ids[:-100])}\r\n\r\n").encode())
        buf = b""
        while b"\nid: " not in buf and b"\ndata: " not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
        writer.close()

    async def run() -> tuple[int, float]:
        """``resumes`` resumes spread evenly over ``seconds`` (at most ``concurrency`` open at
        once): the whole measurement runs under the storm."""
        sem, done, t = asyncio.Semaphore(concurrency), 0, time.perf_counter()

        async def paced(i: int) -> None:
            nonlocal done
            await asyncio.sleep(i * seconds / resumes)  # the storm's schedule
            async with sem:
                await one(i)
                done += 1

        await asyncio.gather(*(paced(i) for i in range(resumes)))
        return done, time.perf_counter() - t

    out.put(asyncio.run(run()))


def _pin(pid: int | None) -> None:
    """Load generators on core 1 (the proxy is on core 0)."""
    if pid is not None and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {1})


def _ms(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resumes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", choices=("both", "events", "evaluated"), default="both",
                        help="which streams the storm resumes (default: half of each)")
    args = parser.parse_args()

    from proxy.dev.devredis import free_port, start_redis
    from proxy.release import publisher
    from proxy.storage import keys

    tmp = Path(tempfile.mkdtemp(prefix="flagedge-resume-"))
    redis_proc, redis_port = start_redis(tmp)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    import redis

    writer = redis.Redis.from_url(redis_url)
    for n in range(HISTORY):
        publisher.push(writer, ENV, publisher.parse_document(orjson.dumps(document(n)),
                                                             source="bench"), author="bench")
    key, _ = keys.create(writer, ENV, "client", "bench")
    ids = state_ids(redis_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    edge = subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--redis", redis_url, "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning"]), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("flagedge did not become ready")
            time.sleep(0.1)
        # Seconds of normal load: long enough to hold the storm. Alternating rounds, medians:
        # this machine's speed drifts by tens of % over seconds.
        seconds = max(8.0, args.resumes / 100)
        quiet_p99s, storm_p99s = [], []
        for _ in range(args.rounds):
            quiet_p99s.append(p99(run_phase(url, key, ids, args, seconds, storming=False)))
            stormy, (done, took) = run_phase(url, key, ids, args, seconds, storming=True)
            storm_p99s.append(p99(stormy))
    finally:
        stop(edge)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    quiet, stormy = statistics.median(quiet_p99s), statistics.median(storm_p99s)
    ratio = stormy / quiet
    print(f"\nresume storm: {done} resumes with random old ids ({args.concurrency} at a time, "
          f"{done / took:.0f}/s for {took:.1f}s) while normal clients evaluate at {args.rate:.0f}/s; "
          f"{FLAGS} flags, {len(ids)} versions of history")
    print(f"normal clients p99 (median of {args.rounds} alternating rounds): quiet {quiet:.2f} ms "
          f"{_ms(quiet_p99s)}, during the storm {stormy:.2f} ms {_ms(storm_p99s)}: "
          f"{ratio:.2f}x (goal <= {GOAL}x)")
    rows = [at_most("normal clients' p99, storm / quiet (median of rounds)", ratio, GOAL,
                    f"quiet p99 {quiet:.2f} ms, storm {stormy:.2f} ms", unit="x"),
            at_least("resumes completed in the last storm", done, args.resumes,
                     f"{done / took:.0f}/s for {took:.1f} s", unit="")]
    details = {"resumes": args.resumes, "concurrency": args.concurrency, "rate": args.rate,
               "rounds": args.rounds, "streams": args.streams, "history": len(ids),
               "p99_ms": {"quiet": quiet_p99s, "storm": storm_p99s}}
    return finish("resume_storm", rows, details)


def run_phase(url: str, key: str, ids: list[str], args: argparse.Namespace, seconds: float,
              storming: bool):
    q: multiprocessing.Queue = multiprocessing.Queue()
    s: multiprocessing.Queue = multiprocessing.Queue()
    normal = multiprocessing.Process(target=normal_clients, args=(url, key, args.rate, seconds, q))
    normal.start()
    _pin(normal.pid)
    attacker = None
    if storming:
        time.sleep(1.0)  # the storm starts once normal load runs (pacing, not synchronisation)
        attacker = multiprocessing.Process(target=storm, args=(
            int(url.rsplit(":", 1)[1]), key, ids, args.resumes, args.concurrency, seconds - 1.0,
            args.streams, s))
        attacker.start()
        _pin(attacker.pid)
    latencies = q.get()
    normal.join()
    if attacker is None:
        return latencies
    result = s.get()
    attacker.join()
    return latencies, result


if __name__ == "__main__":
    sys.exit(main())
