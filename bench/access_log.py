"""What the access log costs: bulk OFREP throughput with the access log on (the default)
against the same server with ``--no-access-log``, alternating rounds in one run (issue 21).

Two `flagedge serve` processes on the same flags and keys (offline mode: no Redis in the way),
each pinned to core 0 in turn's rounds, wrk on core 1 with bench/ofrep_http.py's workload
(repeated users: the cache answers, so the log's share is the largest). The log goes to a
file, as it does in production (a pipe to a collector or journald). Goal: the log on costs at
most 10 % of the throughput with it off. Exit 1 when missed.

Two processes running the same code can differ by more than the goal's 10 %: with one pair of
servers for the whole run, the A/A control (``--control``, both logs off) gave 1.15, 0.98
and 1.03 on one machine. So the rounds are spread over ``--pairs`` fresh pairs of servers,
which of the two starts first alternating, and the medians are taken over all of them.

    python bench/access_log.py [--duration 20] [--rounds 6] [--pairs 3] [--connections 32]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT), str(_HERE)] + [p for p in sys.path
                                         if Path(p or ".").resolve() not in (_HERE, ROOT)]

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from benchutil import offline_files, pinned, stop  # noqa: E402
from report import at_least, at_most, finish, skipped  # noqa: E402
from wrk import find_wrk, run_wrk, wait_port  # noqa: E402

# isort: split
# After the bench/ imports: importing ofrep_http takes bench/ off sys.path.
from ofrep_http import ENV, flag_document, lua_script  # noqa: E402
from wrk import median as _median  # noqa: E402

GOAL = 0.90  # throughput with the log on / with it off


def run_pair(wrk: str, tmp: Path, kinds: tuple[tuple[str, list[str]], ...], script: Path,
             env: dict[str, str], rounds: int, seconds: float, connections: int,
             runs: dict[str, list[tuple[float, float, int]]]) -> int:
    """One fresh ``flagedge serve`` per kind, ``rounds`` alternating rounds of wrk against
    them (appended to ``runs``); returns the access lines the log-on server wrote."""
    from proxy.dev.devredis import free_port

    tmp.mkdir()
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name, extra in kinds:
            port = free_port()
            with (tmp / f"{name}.log").open("wb") as log:  # the child holds its own copy
                proc = subprocess.Popen(pinned(0, [
                    sys.executable, "-m", "proxy", "serve", "--flags",
                    str(tmp.parent / "flags.json"), "--keys", str(tmp.parent / "keys.json"),
                    "--env", ENV, "--host", "127.0.0.1", "--port", str(port), *extra]),
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            servers[name] = (proc, port)
            wait_port(port, proc)
        for _ in range(rounds):
            for name, (_proc, port) in servers.items():
                runs[name].append(run_wrk(wrk, f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags",
                                          script, seconds, connections))
    finally:
        for proc, _port in servers.values():
            stop(proc)
    log_on = tmp / "log on.log"
    return log_on.read_bytes().count(b" access ") if log_on.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=6, help="in all, over the pairs")
    parser.add_argument("--pairs", type=int, default=3,
                        help="fresh pairs of servers the rounds are spread over")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--control", action="store_true",
                        help="A/A control: both servers with the log off (the ratio's noise)")
    args = parser.parse_args()

    wrk = find_wrk()
    if wrk is None:
        return skipped("access_log", "wrk is missing and could not be installed")
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-accesslog-"))
    key = offline_files(tmp, flag_document(), ENV)
    script = lua_script(tmp / "repeated.lua", False, key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    on_args = ["--no-access-log"] if args.control else []
    kinds = (("log on", on_args), ("log off", ["--no-access-log"]))
    pairs = max(1, min(args.pairs, args.rounds))
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in kinds}
    lines = 0
    try:
        for pair in range(pairs):
            order = kinds if pair % 2 == 0 else kinds[::-1]
            rounds = args.rounds // pairs + (pair < args.rounds % pairs)
            lines += run_pair(wrk, tmp / f"pair{pair}", order, script, env, rounds,
                              args.duration / args.rounds, args.connections, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (on, on_p99, on_bad), (off, off_p99, off_bad) = _median(runs["log on"]), _median(runs["log off"])
    ratio = on / off if off else 0.0
    print(f"\naccess log cost: bulk OFREP, repeated users, 1 worker on core 0, wrk -c"
          f"{args.connections} on core 1, {args.rounds} alternating rounds over {pairs} fresh "
          "pairs of servers (medians)")
    print(f"log on  {on:9.0f} req/s  p99 {on_p99:6.2f} ms   ({lines} access lines written)")
    print(f"log off {off:9.0f} req/s  p99 {off_p99:6.2f} ms")
    print(f"on / off = {ratio:.2f} (goal >= {GOAL:.2f})")
    baseline = f"log off {off:.0f} req/s (p99 {off_p99:.2f} ms), on {on:.0f} (p99 {on_p99:.2f})"
    details = {"duration": args.duration, "rounds": args.rounds, "pairs": pairs,
               "connections": args.connections, "control": args.control,
               "access_lines": lines}
    if args.control:
        print("(control: both servers ran with the log off)")
        return finish("access_log", [at_least("A/A control, both logs off: throughput ratio",
                                              ratio, GOAL, baseline)], details)
    served = sum(r.rps for r in runs["log on"]) * args.duration / args.rounds
    rows = [at_least("bulk throughput, access log on / off", ratio, GOAL, baseline),
            at_most("requests failed", on_bad + off_bad, 0, "wrk: non-2xx, socket errors"),
            at_least("access lines written with the log on", lines, 1,
                     f"~{served:.0f} requests served with it on", unit="")]
    return finish("access_log", rows, details)


if __name__ == "__main__":
    sys.exit(main())
