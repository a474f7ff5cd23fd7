"""What the access log costs: bulk OFREP throughput with the access log on (the default)
against the same server with ``--no-access-log``, alternating rounds in one run (issue 21).

Two `flagedge serve` processes on the same flags and keys (offline mode: no Redis in the way),
each pinned to core 0 in turn's rounds, wrk on core 1 with bench/ofrep_http.py's workload
(repeated users: the cache answers, so the log's share is the largest). The log goes to a
file, as it does in production (a pipe to a collector or journald). Goal: the log on costs at
most 10 % of the throughput with it off. Exit 1 when missed.

    python bench/access_log.py [--duration 20] [--rounds 5] [--connections 32]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--control", action="store_true",
                        help="A/A control: both servers with the log off (the ratio's noise)")
    args = parser.parse_args()

    from proxy.dev.devredis import free_port

    wrk = find_wrk()
    if wrk is None:
        return skipped("access_log", "wrk is missing and could not be installed")
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-accesslog-"))
    key = offline_files(tmp, flag_document(), ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    logs = {}
    try:
        on_args = ["--no-access-log"] if args.control else []
        for name, extra in (("log on", on_args), ("log off", ["--no-access-log"])):
            port = free_port()
            logs[name] = (tmp / f"{name}.log").open("wb")
            proc = subprocess.Popen(pinned(0, [
                sys.executable, "-m", "proxy", "serve", "--flags", str(tmp / "flags.json"),
                "--keys", str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1",
                "--port", str(port), *extra]), cwd=ROOT, env=env, stdout=logs[name],
                stderr=subprocess.STDOUT)
            wait_port(port, proc)
            servers[name] = (proc, port)
        script = lua_script(tmp / "repeated.lua", False, key)
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (_proc, port) in servers.items():
                runs[name].append(run_wrk(wrk, f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags",
                                          script, args.duration / args.rounds, args.connections))
    finally:
        for proc, _port in servers.values():
            stop(proc)
        for f in logs.values():
            f.close()
        lines = (tmp / "log on.log").read_bytes().count(b" access ") if (
            tmp / "log on.log").exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
    (on, on_p99, on_bad), (off, off_p99, off_bad) = _median(runs["log on"]), _median(runs["log off"])
    ratio = on / off if off else 0.0
    print(f"\naccess log cost: bulk OFREP, repeated users, 1 worker on core 0, wrk -c"
          f"{args.connections} on core 1, {args.rounds} alternating rounds (medians)")
    print(f"log on  {on:9.0f} req/s  p99 {on_p99:6.2f} ms   ({lines} access lines written)")
    print(f"log off {off:9.0f} req/s  p99 {off_p99:6.2f} ms")
    print(f"on / off = {ratio:.2f} (goal >= {GOAL:.2f})")
    baseline = f"log off {off:.0f} req/s (p99 {off_p99:.2f} ms), on {on:.0f} (p99 {on_p99:.2f})"
    details = {"duration": args.duration, "rounds": args.rounds,
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
