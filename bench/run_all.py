"""Every bench with a goal, in turn, and their rows as one table (``make bench``, issue 21).

Each script runs as ``python bench/<name>.py`` with FLAGEDGE_BENCH_RESULTS pointing at a folder
of its own, where bench/report.py writes its JSON; this reads it back. One table of every row
(script, what, goal, measured, pass, same-run baseline) is printed and written as one JSON
file under bench/results/ (or $FLAGEDGE_BENCH_RESULTS) with the machine, commit and date.

A script counts as passed only when it wrote rows, all of them met, and it exited 0. One that
wrote no JSON (a crash, a timeout) has failed, its exit code shown; one that could not run
here (a tool missing: report.skipped) is shown as skipped. Exit code: 0 when every script
passed, 1 otherwise (a skip included: its goals were not measured).

    python bench/run_all.py [--quick] [--lock FILE] [NAME ...]
    make bench [BENCH="evaluator propagation"] [QUICK=1] [BENCH_LOCK=/tmp/flagedge-bench.lock]

``--quick`` runs each script briefly (to see that they all run; the figures are not the
goals' real measurement). ``--lock FILE`` holds an flock(2) on FILE around each script, so that
other people's benchmarks on the machine run between ours rather than during them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from report import RESULTS, ROOT, SKIPPED, Row, commit, machine

BENCH = ROOT / "bench"

# Every script with a goal, cheap ones first, with the arguments of a quick run.
QUICK: dict[str, list[str]] = {
    "evaluator": ["--runs", "3", "--n", "5000"],
    "bulk_churn": ["--n", "500", "--runs", "1"],
    "propagation": ["--n", "200", "--rounds", "4"],
    "ofrep_http": ["--duration", "4", "--rounds", "2", "--warmup", "1"],
    "access_log": ["--duration", "4", "--rounds", "2", "--pairs", "2"],
    "unleash": ["--duration", "4", "--rounds", "2"],
    "sse": ["--clients", "1000"],
    "sync": ["--streams", "200", "--rounds", "2", "--pushes", "10"],
    "insights": ["--duration", "4", "--rounds", "2"],
    "memory": ["--duration", "8", "--warmup", "3"],
    "resume_storm": ["--resumes", "300", "--rounds", "1"],
    "slowloris": ["--loris", "300", "--streams", "300", "--rounds", "2"],
    "soak": ["--duration", "30", "--baseline", "10", "--readers", "300"],
}
SCRIPTS = tuple(QUICK)


@dataclass
class Outcome:
    script: str
    status: str  # passed | missed | failed | skipped
    exit_code: int | None
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


def _rows(record: dict) -> list[Row]:
    names = {f.name for f in fields(Row)}
    return [Row(**{k: v for k, v in r.items() if k in names}) for r in record["rows"]]


def read_outcome(script: str, folder: Path, exit_code: int | None, seconds: float = 0.0
                 ) -> Outcome:
    """What one script's run came to, from its exit code and the JSON it left in ``folder``
    (the newest, if several)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        if exit_code == SKIPPED:
            return Outcome(script, "skipped", exit_code, note=f"exit {exit_code}, no results",
                           seconds=seconds)
        return Outcome(script, "failed", exit_code, seconds=seconds,
                       note=f"no results written (exit {exit_code})")
    try:
        record = json.loads(files[-1].read_text())
        rows = _rows(record)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Outcome(script, "failed", exit_code, seconds=seconds,
                       note=f"unreadable results {files[-1].name}: {exc}")
    out = Outcome(script, "passed", exit_code, rows, seconds=seconds,
                  details=record.get("details", {}))
    if "skipped" in record:
        out.status, out.note = "skipped", str(record["skipped"])
    elif not rows:
        out.status, out.note = "failed", f"no rows (exit {exit_code})"
    elif not all(r.passed or r.skipped for r in rows):
        out.status = "missed"
        if exit_code != 1:
            out.note = f"exit {exit_code}"
    elif any(r.skipped for r in rows):  # some goals not measured here (a peer missing)
        out.status = "skipped"
        out.note = "; ".join(f"{r.what}: {r.baseline}" for r in rows if r.skipped)
    elif exit_code != 0:
        out.status, out.note = "failed", f"exit {exit_code} though its rows passed"
    return out


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'bench':13} {'what':58} {'goal':>10} {'measured':>10} {'pass':>7}  baseline"]
    for o in outcomes:
        for r in o.rows:
            lines.append(f"{o.script:13} {r.what[:58]:58} {r.goal:>10} {r.measured:>10.3g} "
                         f"{'skip' if r.skipped else 'yes' if r.passed else 'NO':>7}  {r.baseline}")
        if o.status in ("failed", "skipped") or o.note:
            lines.append(f"{o.script:13} {'(' + o.note + ')' if o.note else '':58} "
                         f"{'':>10} {'':>10} {o.status.upper():>7}")
    return "\n".join(lines)


def exit_code(outcomes: list[Outcome]) -> int:
    return 0 if outcomes and all(o.status == "passed" for o in outcomes) else 1


def verdict(outcomes: list[Outcome]) -> str:
    count = {s: sum(o.status == s for o in outcomes)
             for s in ("passed", "missed", "failed", "skipped")}
    return (f"{count['passed']} of {len(outcomes)} benches met every goal; "
            f"{count['missed']} missed a goal, {count['failed']} failed, "
            f"{count['skipped']} skipped")


def write_record(outcomes: list[Outcome], quick: bool, folder: Path | None = None) -> Path:
    folder = folder or Path(os.environ.get("FLAGEDGE_BENCH_RESULTS", RESULTS))
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    path = folder / f"{now:%Y%m%dT%H%M%SZ}-suite{'-quick' if quick else ''}.json"
    path.write_text(json.dumps({
        "suite": "bench/run_all.py", "date": now.isoformat(timespec="seconds"),
        "commit": commit(), "machine": machine(), "quick": quick,
        "passed": exit_code(outcomes) == 0, "verdict": verdict(outcomes),
        "scripts": [{"script": o.script, "status": o.status, "exit_code": o.exit_code,
                     "note": o.note, "seconds": round(o.seconds, 1), "details": o.details}
                    for o in outcomes],
        "rows": [{"script": o.script, **asdict(r)} for o in outcomes for r in o.rows]},
        indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def held(lock: Path | None) -> Iterator[None]:
    """An exclusive flock(2) on ``lock`` (the one flock(1) takes), or nothing."""
    if lock is None:
        yield
        return
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_one(script: str, args: list[str], timeout: float, lock: Path | None) -> Outcome:
    """One script in its own process group (its servers with it, should it be stopped),
    its JSON collected from a folder of its own."""
    with tempfile.TemporaryDirectory(prefix=f"flagedge-bench-{script}-") as tmp:
        env = {**os.environ, "FLAGEDGE_BENCH_RESULTS": tmp}
        command = [sys.executable, str(BENCH / f"{script}.py"), *args]
        print(f"\n=== {script}: {' '.join(command[1:])}", flush=True)
        with held(lock):
            began = time.monotonic()
            proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
            try:
                code: int | None = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc)
                code = None
            seconds = time.monotonic() - began
        out = read_outcome(script, Path(tmp), code, seconds)
        if code is None:
            out.status, out.note = "failed", f"stopped after {timeout:.0f} s; {out.note}"
        return out


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the script's process group (it started it: start_new_session), then
    SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benches to run (default: all): {' '.join(SCRIPTS)}")
    parser.add_argument("--quick", action="store_true", help="short runs (do they all run?)")
    parser.add_argument("--lock", type=Path, help="flock this file around each script")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    args = parser.parse_args(argv)
    names = [n.removesuffix(".py").removeprefix("bench/") for n in args.names] or list(SCRIPTS)
    unknown = [n for n in names if n not in QUICK]
    if unknown:
        parser.error(f"no such bench: {' '.join(unknown)} (choose from {' '.join(SCRIPTS)})")
    outcomes = [run_one(n, QUICK[n] if args.quick else [], args.timeout, args.lock)
                for n in names]
    path = write_record(outcomes, args.quick)
    print(f"\n{table(outcomes)}\n")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"{verdict(outcomes)}{' (quick runs)' if args.quick else ''}; results: {shown}")
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
