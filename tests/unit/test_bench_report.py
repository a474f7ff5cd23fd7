"""bench/report.py: each goal a row that passes or fails on its own figure (or is skipped: not
measured here, failing nothing, never read as a pass by a reader that only knows
``passed``), the exit code a bench script returns, and the JSON it leaves for `make bench`
(bench/run_all.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_module import load


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load("report")


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLAGEDGE_BENCH_RESULTS", str(tmp_path))
    return tmp_path


def test_at_least_passes_on_the_goal_and_above_only(report: ModuleType) -> None:
    assert report.at_least("ratio", 10.0, 10).passed
    assert report.at_least("ratio", 12.5, 10).passed
    row = report.at_least("ratio", 9.99, 10, "flagd-core 1300 ns")
    assert not row.passed
    assert row.goal == ">= 10x" and row.baseline == "flagd-core 1300 ns"


def test_at_most_passes_on_the_goal_and_below_only(report: ModuleType) -> None:
    assert report.at_most("p99", 10.0, 10, unit=" ms").passed
    row = report.at_most("p99", 10.2, 10, unit=" ms")
    assert not row.passed and row.goal == "<= 10 ms"
    assert not report.at_most("ratio", float("nan"), 1.15).passed  # no figure is no pass


def test_finish_exits_0_only_when_every_goal_is_met(report: ModuleType, results: Path) -> None:
    met = report.at_least("a", 2, 1)
    missed = report.at_most("b", 2, 1)
    assert report.finish("demo", [met, met]) == 0
    assert report.finish("demo", [met, missed]) == 1
    assert report.finish("demo", []) == 1  # a bench that measured nothing met nothing


def test_finish_writes_rows_machine_commit_and_date(report: ModuleType, results: Path) -> None:
    report.finish("demo", [report.at_least("a", 2, 1, "base 1")], {"n": 5})
    (path,) = results.glob("*-demo.json")
    record = json.loads(path.read_text())
    assert record["script"] == "demo" and record["passed"] is True
    assert record["rows"] == [{"what": "a", "goal": ">= 1x", "measured": 2, "baseline": "base 1",
                               "passed": True, "unit": "x", "skipped": False}]
    assert record["details"] == {"n": 5}
    assert record["commit"] and record["date"] and record["machine"]["cores"]
    assert "skipped" not in record


def test_a_skipped_bench_is_written_as_skipped_never_passed(report: ModuleType,
                                                            results: Path) -> None:
    assert report.skipped("demo", "wrk is missing") == report.SKIPPED != 0
    record = json.loads(next(results.glob("*-demo.json")).read_text())
    assert record["skipped"] == "wrk is missing"
    assert record["passed"] is False and record["rows"] == []


def written(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())


def test_a_skipped_row_fails_nothing_and_says_why(report: ModuleType, results: Path, capsys) -> None:
    rows = [report.at_least("measured", 7.0, 6.0), report.skip("peer", ">= 6x", "npm not found")]
    assert report.finish("t", rows) == 0
    out = capsys.readouterr().out
    assert "skip  npm not found" in out and "1 row skipped" in out
    saved = written(results)
    assert saved["passed"] is True
    assert saved["rows"][1] == {"what": "peer", "goal": ">= 6x", "measured": 0.0,
                                "baseline": "npm not found", "passed": False, "unit": "",
                                "skipped": True}


def test_a_skip_does_not_hide_a_miss(report: ModuleType, results: Path) -> None:
    rows = [report.at_least("measured", 5.0, 6.0), report.skip("peer", ">= 6x", "no npm")]
    assert report.finish("t", rows) == 1
    assert written(results)["passed"] is False


def test_nothing_measured_is_said_so(report: ModuleType, results: Path, capsys) -> None:
    assert report.finish("t", [report.skip("peer", ">= 6x", "no npm")]) == 0
    assert "nothing measured" in capsys.readouterr().out
