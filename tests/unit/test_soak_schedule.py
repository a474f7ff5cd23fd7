"""bench/soak.py's alternating schedule: quiet and storm windows, and which requests count in
which window. The storm/quiet ratio the issue asks for rests on these."""

from __future__ import annotations

import itertools
from array import array
from types import ModuleType

import pytest

from tests.bench_module import load


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    return load("soak")


def test_windows_alternate_quiet_first_with_duration_of_each_kind(soak: ModuleType) -> None:
    windows = soak.schedule(100.0, 5.0, 60.0)
    assert len(windows) == 24
    assert [storm for _, _, storm in windows] == [False, True] * 12
    assert windows[0][0] == 100.0 and windows[-1][1] == 220.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))  # no gaps, no overlaps
    assert sum(e - b for b, e, storm in windows if storm) == 60.0
    # a duration that is not a whole number of windows rounds up, never down to nothing
    assert [storm for _, _, storm in soak.schedule(0.0, 5.0, 7.0)] == [False, True] * 2
    assert len(soak.schedule(0.0, 5.0, 1.0)) == 2


def test_requests_count_in_the_window_they_started_in_after_its_guard(
        soak: ModuleType) -> None:
    windows = soak.schedule(10.0, 5.0, 10.0)  # quiet 10-15, storm 15-20, quiet 20-25, storm 25-30
    requests = [
        (9.9, 0.001),    # before the schedule: nowhere
        (10.2, 0.001),   # inside the first window's guard: left out
        (11.0, 0.002),   # quiet 0
        (16.0, 0.003),   # storm 0
        (19.9, 0.2),     # runs past its window's end into the next: left out
        (20.6, 0.004),   # quiet 1
        (29.0, 0.005),   # storm 1
        (30.5, 0.001),   # after the schedule: nowhere
    ]
    starts = array("d", (t for t, _ in requests))
    per_window = soak.split_by_schedule(starts, [lat for _, lat in requests], windows, 0.5)
    assert per_window == [[0.002], [0.003], [0.004], [0.005]]


def test_busy_share_is_taken_from_the_windows_of_one_kind(soak: ModuleType) -> None:
    windows = soak.schedule(0.0, 1.0, 2.0)  # quiet 0-1, storm 1-2, quiet 2-3, storm 3-4
    # (time, CPU seconds): 10% of a core in quiet windows, 50% in storm windows
    samples, cpu = [(0.0, 0.0)], 0.0
    for i in range(40):
        t = (i + 1) / 10
        cpu += 0.05 if int((t - 0.05) // 1) % 2 else 0.01
        samples.append((t, cpu))
    assert soak.busy(samples, windows, storm=False) == pytest.approx(0.1)
    assert soak.busy(samples, windows, storm=True) == pytest.approx(0.5)
