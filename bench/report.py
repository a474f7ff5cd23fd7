"""One shape for every bench's results: each goal a row (what, goal, measured, same-run
baseline, pass), printed as a table and written as JSON under bench/results/ with the
machine, commit and date, so the history of a number can be read. ``finish`` is a script's
exit code: 1 when any goal is missed. A row that could not be measured here (``skip``: a peer
or tool missing) is shown as such and fails nothing.

``make bench`` (bench/run_all.py) runs every script and prints their rows as one table; it
sets FLAGEDGE_BENCH_RESULTS so that each script's JSON lands where it collects them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Row:
    what: str  # "bulk OFREP, repeated users: flagedge / echo"
    goal: str  # ">= 0.8"
    measured: float
    baseline: str  # the same-run figure the measurement is read against ("echo 23,100 req/s")
    passed: bool
    unit: str = ""  # "x", "ms", "KB/conn"
    # Not measured here (a peer or a tool is missing): neither met nor missed. ``passed`` stays
    # False, so that a reader that only knows ``passed`` never takes a skip for a pass.
    skipped: bool = False


def at_least(what: str, measured: float, goal: float, baseline: str = "", unit: str = "x"
             ) -> Row:
    return Row(what, f">= {goal:g}{unit}", round(measured, 3), baseline, measured >= goal, unit)


def at_most(what: str, measured: float, goal: float, baseline: str = "", unit: str = ""
            ) -> Row:
    return Row(what, f"<= {goal:g}{unit}", round(measured, 3), baseline, measured <= goal, unit)


def skip(what: str, goal: str, why: str) -> Row:
    """A row that could not be measured here, with the reason in place of a baseline."""
    return Row(what, goal, 0.0, why, passed=False, skipped=True)


def met(row: Row) -> bool:
    """A row that does not fail its script: its goal met, or not measured here."""
    return row.passed or row.skipped


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"node": platform.node(), "system": platform.platform(), "cpu": model,
            "cores": os.cpu_count(), "python": platform.python_version(),
            # At the end of the run: other work on the machine shows here (it slows the
            # baselines too, and flatters ratios against them).
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(rows: list[Row], script: str = "") -> str:
    head = f"{'bench':14} " if script else ""
    lines = [f"{head}{'what':58} {'goal':>10} {'measured':>10} {'pass':>5}  baseline"]
    for row in rows:
        lead = f"{script:14} " if script else ""
        measured = "-" if row.skipped else f"{row.measured:.3g}"
        verdict = "skip" if row.skipped else "yes" if row.passed else "NO"
        lines.append(f"{lead}{row.what[:58]:58} {row.goal:>10} "
                     f"{measured:>10} {verdict:>5}  {row.baseline}")
    return "\n".join(lines)


def write(script: str, rows: list[Row], details: dict | None = None,
          skipped: str | None = None) -> Path:
    folder = Path(os.environ.get("FLAGEDGE_BENCH_RESULTS", RESULTS))
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    path = folder / f"{now:%Y%m%dT%H%M%SZ}-{script}.json"
    record = {
        "script": script, "date": now.isoformat(timespec="seconds"), "commit": commit(),
        "machine": machine(), "passed": bool(rows) and all(met(r) for r in rows),
        "rows": [asdict(r) for r in rows], "details": details or {}}
    if skipped is not None:
        record["skipped"] = skipped
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def finish(script: str, rows: list[Row], details: dict | None = None) -> int:
    """Print the rows, write them as JSON; the exit code: 0 only when every goal is met."""
    print()
    print(table(rows))
    path = write(script, rows, details)
    ok = bool(rows) and all(met(r) for r in rows)
    skipped = sum(r.skipped for r in rows)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    verdict = "all goals met" if ok else "GOAL MISSED"
    if rows and skipped == len(rows):
        verdict = "nothing measured"
    if skipped:
        verdict += f" ({skipped} row{'s' if skipped > 1 else ''} skipped: not measured here)"
    print(f"{verdict}; results: {shown}")
    return 0 if ok else 1


SKIPPED = 77  # the exit code of a bench that could not run (automake's convention)


def skipped(script: str, reason: str) -> int:
    """A bench that cannot run here (a tool missing): written as skipped, with no rows, so
    that it is never read as passed. The exit code is SKIPPED."""
    path = write(script, [], {}, skipped=reason)
    print(f"SKIPPED: {reason}; results: {path}")
    return SKIPPED
