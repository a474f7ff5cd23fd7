"""Abuse benchmark: normal clients' bulk OFREP p99 while slow-loris connections and a client-key
holder grabbing evaluated streams attack the same worker, against the same clients unattacked.

One `flagedge serve` worker pinned to core 0 (offline flags + keys, ``--trusted-proxies
127.0.0.1``: the bench plays the reverse proxy that appends each client's address to
X-Forwarded-For). On core 1: wrk as the normal clients (bulk evaluations, repeated users) and
one attacker process that holds ``--loris`` connections sending a request head one byte-line
every ``--drip`` seconds (reconnecting whenever the server closes one, as a real attacker
would) and tries to open ``--streams`` evaluated streams with the client key from one address.
Rounds: quiet, attacked, quiet; while attacked, a real user (another address) opens a stream.

Goals: attacked p99 <= 2x the quiet p99 (mean of both quiet rounds), no normal request failed,
and the real user's stream accepted (200 and its first ``put``). Exit 1 when one is missed.

    python bench/slowloris.py [--loris 1000] [--streams 2000] [--duration 12]
    python bench/slowloris.py --loris 5000 --streams 10000     # the issue's figure
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import offline_files, pinned, raise_nofile, stop
from report import at_least, at_most, finish, skipped
from wrk import find_wrk, run_wrk, wait_port

# isort: split
# After the bench/ imports: importing ofrep_http puts the project root first on sys.path,
# bench/ out.
from ofrep_http import ENV, ROOT, flag_document, lua_script

ATTACKER_ADDRESS = "203.0.113.66"  # what "our proxy" appends for the attacker
USER_ADDRESS = "198.51.100.1"  # and for the real user
CONTEXT = base64.urlsafe_b64encode(b'{"targetingKey":"user-1","plan":"pro"}').decode().rstrip("=")
STREAM_PATH = f"/v1/stream/evaluated?context={CONTEXT}"


# -- the attacker (a child process) ------------------------------------------------------------
LORIS_HEAD = b"GET /ofrep/v1/configuration HTTP/1.1\r\nHost: bench\r\n"
LORIS_LINE = b"X-Loris: x\r\n"
DRIP_SLICES = 20  # each tick drips a 20th of the connections: lines arrive spread out


class Loris(asyncio.Protocol):
    """One slow-loris connection: a request head that never ends; when the server closes
    it, the attack opens another. Plain protocol callbacks (no task, no timer per
    connection): the attacker's CPU shares a core with the normal clients' wrk."""

    def __init__(self, attack: Attack):
        self.attack = attack
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.attack.loris.append(self)
        transport.write(LORIS_HEAD)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:  # the 408; the close follows
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.attack.closed_by_server += 1
        self.attack.reconnect()


class Attack:
    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.loris: list[Loris] = []
        self.closed_by_server = 0
        self.stopping = False
        self.statuses: dict[str, int] = {}
        self.held: list[asyncio.StreamWriter] = []

    @property
    def loris_open(self) -> int:
        return sum(1 for c in self.loris if c.transport is not None)

    def reconnect(self) -> None:
        if not self.stopping:
            asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: Loris(self), "127.0.0.1", self.port)
        except OSError:
            loop.call_later(1.0, self.reconnect)

    async def drip(self, every: float) -> None:
        tick = 0
        while not self.stopping:
            await asyncio.sleep(every / DRIP_SLICES)
            self.loris = [c for c in self.loris if c.transport is not None]
            for conn in self.loris[tick % DRIP_SLICES::DRIP_SLICES]:
                if conn.transport is not None:
                    conn.transport.write(LORIS_LINE)
            tick += 1

    async def stream(self) -> None:
        """One attempt at an evaluated stream with the client key; held open if accepted."""
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(f"GET {STREAM_PATH} HTTP/1.1\r\nHost: bench\r\n"
                         f"Authorization: Bearer {self.key}\r\n"
                         f"X-Forwarded-For: 10.{len(self.held) % 250}.0.1, {ATTACKER_ADDRESS}\r\n"
                         "\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), 30)
            status = line.split(b" ")[1].decode() if line else "closed"
        except (OSError, TimeoutError, IndexError):
            status = "error"
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "200" and writer is not None:
            self.held.append(writer)
        elif writer is not None:
            writer.close()


async def attack_main(port: int, key: str, loris: int, streams: int, drip: float) -> None:
    attack = Attack(port, key)
    dripping = asyncio.create_task(attack.drip(drip))
    gate = asyncio.Semaphore(256)

    async def ramp() -> None:
        async with gate:
            await attack.connect()

    await asyncio.gather(*(ramp() for _ in range(loris)))
    began = time.monotonic()
    while attack.loris_open < loris * 0.95 and time.monotonic() - began < 30:
        await asyncio.sleep(0.1)

    async def attempt() -> None:
        async with gate:
            await attack.stream()

    await asyncio.gather(*(attempt() for _ in range(streams)))
    print(json.dumps({"ready": {"loris_open": attack.loris_open, "streams": attack.statuses}}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told
    attack.stopping = True
    dripping.cancel()
    print(json.dumps({"done": {"loris_open": attack.loris_open, "streams": attack.statuses,
                               "loris_closed_by_server": attack.closed_by_server}}), flush=True)
    os._exit(0)  # thousands of sockets: the kernel closes them faster than the loop would


# -- the parent -----------------------------------------------------------------------------
def real_user_stream(port: int, key: str) -> tuple[int, str]:
    """A real user, from another address, opens an evaluated stream: its status and first
    event's name."""
    import httpx
    from httpx_sse import connect_sse

    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": USER_ADDRESS}
    with httpx.Client(timeout=httpx.Timeout(10)) as client, connect_sse(
            client, "GET", f"http://127.0.0.1:{port}{STREAM_PATH}", headers=headers) as source:
        if source.response.status_code != 200:
            return source.response.status_code, ""
        for sse in source.iter_sse():
            if sse.event == "put":
                return 200, sse.event
    return 200, ""


def refusals(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for name in ("flagedge_http_connections_refused_total", "flagedge_sse_refused_total",
                 "flagedge_http_connections", "flagedge_sse_connections"):
        for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? ([\d.e+]+)$", text, re.M):
            out[name + (m.group(1) or "")] = float(m.group(2))
    return out


def setup_files(tmp: Path) -> str:

    key = offline_files(tmp, flag_document(), ENV)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loris", type=int, default=1000, help="slow-loris connections")
    parser.add_argument("--streams", type=int, default=2000, help="attacker stream attempts")
    parser.add_argument("--drip", type=float, default=2.0, help="seconds between loris lines")
    parser.add_argument("--duration", type=float, default=12.0,
                        help="seconds per wrk round (above header_timeout: every loris is cut and comes back while attacked)")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="the server's header_timeout (its default: 10)")
    parser.add_argument("--rounds", type=int, default=4, help="wrk runs per phase")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--attack", nargs=2, metavar=("PORT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_nofile(args.loris + args.streams + 1024)
    if args.attack:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover
            pass
        asyncio.run(attack_main(int(args.attack[0]), args.attack[1], args.loris, args.streams,
                                args.drip))
        return 0

    from proxy.dev.devredis import free_port

    wrk = find_wrk()
    if wrk is None:
        return skipped("slowloris", "wrk is missing and could not be installed")
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-slowloris-"))
    key = setup_files(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    port = free_port()
    url = f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags"
    script = lua_script(tmp / "normal.lua", False, key)
    server = subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--flags", str(tmp / "flags.json"), "--keys",
        str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port", str(port),
        "--trusted-proxies", "127.0.0.1", "--header-timeout", str(args.header_timeout),
        "--no-access-log", "--log-level", "warning"]),
        cwd=ROOT, env=env)
    attacker = None
    try:
        wait_port(port, server)
        run_wrk(wrk, url, script, 3, args.connections)  # warm-up: the result cache fills
        quiet1 = rounds(wrk, url, script, args, server.pid)
        began = time.monotonic()
        attacker = subprocess.Popen(
            pinned(1, [sys.executable, __file__, "--loris", str(args.loris), "--streams",
                       str(args.streams), "--drip", str(args.drip), "--attack", str(port), key]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = json.loads(attacker.stdout.readline() or "{}").get("ready")
        if ready is None:
            raise RuntimeError("the attacker did not get ready")
        setup_s = time.monotonic() - began
        user = real_user_stream(port, key)
        attacked = rounds(wrk, url, script, args, server.pid)
        during = refusals(port)
        attacker.stdin.write("\n")
        attacker.stdin.flush()
        done = json.loads(attacker.stdout.readline() or "{}").get("done", {})
        attacker.wait(30)
        quiet2 = rounds(wrk, url, script, args, server.pid)
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
        stop(server, timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args, quiet1, attacked, quiet2, ready, done, during, user, setup_s)


Phase = tuple[list[tuple[float, float, int]], float]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rounds(wrk: str, url: str, script: Path, args: argparse.Namespace, pid: int) -> Phase:
    """A phase as ``--rounds`` short wrk runs (on a shared machine another process's burst
    spoils one run's p99, not the phase's median), and the server's CPU share meanwhile
    (near 1.0: the server was the bottleneck; well below: the clients or the machine)."""
    cpu, began = cpu_seconds(pid), time.monotonic()
    runs = [run_wrk(wrk, url, script, args.duration / args.rounds, args.connections)
            for _ in range(args.rounds)]
    return runs, (cpu_seconds(pid) - cpu) / (time.monotonic() - began)


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(args: argparse.Namespace, quiet1_phase: Phase, attacked_phase: Phase,
           quiet2_phase: Phase, ready: dict, done: dict, during: dict[str, float],
           user: tuple[int, str], setup_s: float) -> int:
    (quiet1, cpu1), (attacked, cpu_a), (quiet2, cpu2) = quiet1_phase, attacked_phase, quiet2_phase
    baseline = median([r[1] for r in quiet1 + quiet2])
    attacked_p99 = median([r[1] for r in attacked])
    ratio = attacked_p99 / baseline if baseline else float("inf")
    failed = sum(r[2] for r in quiet1 + attacked + quiet2)
    print(f"\nslow-loris + stream grab, 1 worker on core 0; wrk -c{args.connections} and the "
          f"attacker on core 1; {args.duration:.0f}s per phase in {args.rounds} runs "
          f"(p99: median of the runs)")
    print(f"attack: {args.loris} slow-loris connections (a line every {args.drip:g}s; "
          f"{ready['loris_open']} open when ready), {args.streams} evaluated-stream attempts "
          f"from one address: {ready['streams']}; ready after {setup_s:.1f}s")
    print(f"during the attacked round: loris open {done.get('loris_open')}, closed by the "
          f"server so far {done.get('loris_closed_by_server')}")
    for name, value in sorted(during.items()):
        print(f"  {name} {value:g}")
    print(f"{'phase':10} {'req/s':>9} {'p99':>9} {'server CPU':>10}   p99 of each run")
    for label, runs, cpu in (("quiet", quiet1, cpu1), ("attacked", attacked, cpu_a),
                             ("quiet", quiet2, cpu2)):
        each = " ".join(f"{r[1]:.1f}" for r in runs)
        print(f"{label:10} {median([r[0] for r in runs]):9.0f} "
              f"{median([r[1] for r in runs]):7.2f}ms {cpu:10.2f}   {each}")
    user_ok = user == (200, "put")
    print(f"p99 attacked/quiet {ratio:.2f} (goal <= 2.0); normal requests failed: {failed}; "
          f"real user's stream: {user[0]} {user[1] or '(no put)'} (goal 200 put)")
    rows = [at_most("normal clients' p99, attacked / quiet", ratio, 2.0,
                    f"quiet p99 {baseline:.2f} ms, attacked {attacked_p99:.2f} ms", unit="x"),
            at_most("normal requests failed", failed, 0, "wrk: non-2xx, socket errors"),
            at_least("a real user's stream accepted (200 and a put)", int(user_ok), 1,
                     f"got {user[0]} {user[1] or '(no put)'}", unit="")]
    details = {"loris": args.loris, "streams": args.streams, "duration": args.duration,
               "rounds": args.rounds, "connections": args.connections,
               "attacker_ready": ready, "attacker_done": done, "metrics_during": during,
               "server_cpu": {"quiet": cpu1, "attacked": cpu_a, "quiet_after": cpu2}}
    return finish("slowloris", rows, details)


if __name__ == "__main__":
    sys.exit(main())
