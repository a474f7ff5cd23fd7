"""bench/run_all.py (`make bench`): what each script's run came to, read from the JSON it
left in its folder and its exit code, the one table, and the suite's exit code. The per-script
files here are written by bench/report.py itself, as the scripts write them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_module import load


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    return load("run_all")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load("report")


def results_of(report: ModuleType, folder: Path, monkeypatch: pytest.MonkeyPatch,
               script: str, rows: list, skipped: str | None = None) -> Path:
    """A script's results folder as the script would leave it."""
    folder.mkdir()
    monkeypatch.setenv("FLAGEDGE_BENCH_RESULTS", str(folder))
    if skipped is not None:
        report.skipped(script, skipped)
    else:
        report.finish(script, rows)
    return folder


def test_a_script_whose_rows_all_pass_and_exits_0_passed(
        run_all: ModuleType, report: ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [report.at_least("speed-up", 12.0, 10, "flagd-core 1300 ns")]
    folder = results_of(report, tmp_path / "evaluator", monkeypatch, "evaluator", rows)
    out = run_all.read_outcome("evaluator", folder, 0)
    assert out.status == "passed"
    assert [asdict(r) for r in out.rows] == [asdict(r) for r in rows]
    assert run_all.exit_code([out]) == 0


def test_a_missed_goal_fails_the_suite(run_all: ModuleType, report: ModuleType,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [report.at_least("a", 12.0, 10), report.at_most("p99", 11.0, 10, unit=" ms")]
    folder = results_of(report, tmp_path / "propagation", monkeypatch, "propagation", rows)
    out = run_all.read_outcome("propagation", folder, 1)
    assert out.status == "missed" and out.note == ""
    assert run_all.exit_code([out]) == 1


def test_no_json_is_a_failure_with_its_exit_code(run_all: ModuleType, tmp_path: Path) -> None:
    out = run_all.read_outcome("sse", tmp_path, 1)
    assert out.status == "failed" and "exit 1" in out.note and out.rows == []
    # even a script that exited 0: without rows nothing was shown to be met
    assert run_all.read_outcome("sse", tmp_path, 0).status == "failed"
    assert run_all.read_outcome("sse", tmp_path, None).status == "failed"  # stopped
    table = run_all.table([out])
    assert "FAILED" in table and "exit 1" in table


def test_rows_that_pass_do_not_hide_a_crash_after_them(
        run_all: ModuleType, report: ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = results_of(report, tmp_path / "soak", monkeypatch, "soak",
                        [report.at_most("errors", 0, 0)])
    out = run_all.read_outcome("soak", folder, -9)
    assert out.status == "failed" and "exit -9" in out.note


def test_a_skipped_script_shows_as_skipped_and_fails_the_suite(
        run_all: ModuleType, report: ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = results_of(report, tmp_path / "memory", monkeypatch, "memory", [],
                        skipped="wrk is missing")
    out = run_all.read_outcome("memory", folder, report.SKIPPED)
    assert out.status == "skipped" and out.note == "wrk is missing"
    assert "SKIPPED" in run_all.table([out]) and "yes" not in run_all.table([out])
    assert run_all.exit_code([out]) == 1
    # the skip exit code without any JSON (a script not converted yet) is a skip too
    assert run_all.read_outcome("sse", tmp_path / "none", report.SKIPPED).status == "skipped"


def test_a_script_with_a_skipped_row_is_skipped_unless_another_row_missed(
        run_all: ModuleType, report: ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/unleash.py measures flagedge, then skips the peer's rows where npm is missing:
    its goals were not measured, so the suite does not pass; a miss beside it stays a miss."""
    peer = report.skip("vs Unleash Proxy", ">= 6x", "npm not found")
    folder = results_of(report, tmp_path / "a", monkeypatch, "unleash",
                        [report.at_least("flagedge runs", 2, 1), peer])
    out = run_all.read_outcome("unleash", folder, 0)
    assert out.status == "skipped" and "npm not found" in out.note
    assert "skip" in run_all.table([out]) and run_all.exit_code([out]) == 1
    folder = results_of(report, tmp_path / "b", monkeypatch, "unleash",
                        [report.at_least("flagedge runs", 0.5, 1), peer])
    assert run_all.read_outcome("unleash", folder, 1).status == "missed"


def test_an_empty_or_unreadable_result_is_a_failure(run_all: ModuleType, tmp_path: Path
                                                   ) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x-a.json").write_text(json.dumps({"script": "a", "rows": []}))
    assert run_all.read_outcome("a", tmp_path / "a", 1).status == "failed"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x-b.json").write_text("{not json")
    out = run_all.read_outcome("b", tmp_path / "b", 0)
    assert out.status == "failed" and "unreadable" in out.note


def test_one_table_and_one_record_of_every_script(
        run_all: ModuleType, report: ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = run_all.read_outcome("evaluator", results_of(
        report, tmp_path / "e", monkeypatch, "evaluator",
        [report.at_least("static speed-up", 14.0, 10, "flagd-core 1300 ns")]), 0)
    missed = run_all.read_outcome("access_log", results_of(
        report, tmp_path / "l", monkeypatch, "access_log",
        [report.at_least("log on / off", 0.7, 0.9, "log off 16000 req/s")]), 1)
    crashed = run_all.read_outcome("sse", tmp_path / "nothing", 2)
    outcomes = [good, missed, crashed]
    lines = run_all.table(outcomes).splitlines()
    assert lines[0].split()[:6] == ["bench", "what", "goal", "measured", "pass", "baseline"]
    assert [ln.split()[0] for ln in lines[1:]] == ["evaluator", "access_log", "sse"]
    assert "flagd-core 1300 ns" in lines[1] and " yes " in lines[1]
    assert " NO " in lines[2] and "FAILED" in lines[3]
    assert run_all.exit_code(outcomes) == 1
    assert run_all.verdict(outcomes).startswith("1 of 3 benches met every goal; 1 missed")

    path = run_all.write_record(outcomes, quick=True, folder=tmp_path / "suite")
    assert path.name.endswith("-suite-quick.json")
    record = json.loads(path.read_text())
    assert record["passed"] is False and record["quick"] is True
    assert record["commit"] and record["date"] and record["machine"]["cores"]
    assert [s["status"] for s in record["scripts"]] == ["passed", "missed", "failed"]
    assert record["scripts"][2]["exit_code"] == 2
    assert [(r["script"], r["passed"]) for r in record["rows"]] == [
        ("evaluator", True), ("access_log", False)]


def test_every_bench_with_a_goal_is_in_the_suite(run_all: ModuleType) -> None:
    bench = Path(run_all.BENCH)
    assert all((bench / f"{name}.py").exists() for name in run_all.SCRIPTS)
    for name in ("evaluator", "propagation", "ofrep_http", "sse", "soak", "bulk_churn",
                 "access_log", "memory", "resume_storm", "slowloris"):
        assert name in run_all.SCRIPTS
