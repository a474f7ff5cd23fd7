"""bench/report.py's skipped rows: shown as "skip", failing nothing, and never read as a pass
by a reader that only knows ``passed``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_module import load


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLAGEDGE_BENCH_RESULTS", str(tmp_path))
    return load("report")


def written(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())


def test_a_skipped_row_fails_nothing_and_says_why(report, tmp_path: Path, capsys) -> None:
    rows = [report.at_least("measured", 7.0, 6.0), report.skip("peer", ">= 6x", "npm not found")]
    assert report.finish("t", rows) == 0
    out = capsys.readouterr().out
    assert "skip  npm not found" in out and "1 row skipped" in out
    saved = written(tmp_path)
    assert saved["passed"] is True
    assert saved["rows"][1] == {"what": "peer", "goal": ">= 6x", "measured": 0.0,
                                "baseline": "npm not found", "passed": False, "unit": "",
                                "skipped": True}


def test_a_skip_does_not_hide_a_miss(report, tmp_path: Path) -> None:
    rows = [report.at_least("measured", 5.0, 6.0), report.skip("peer", ">= 6x", "no npm")]
    assert report.finish("t", rows) == 1
    assert written(tmp_path)["passed"] is False


def test_nothing_measured_is_said_so(report, capsys) -> None:
    assert report.finish("t", [report.skip("peer", ">= 6x", "no npm")]) == 0
    assert "nothing measured" in capsys.readouterr().out
