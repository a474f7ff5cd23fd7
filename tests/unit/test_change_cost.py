"""bench/change_cost.py's arithmetic: a change costs what the writes added above the
process's own idle rate, scaled to the length of the writes."""

from __future__ import annotations

import pytest

from tests.bench_module import load


def load_per_change():
    return load("change_cost").per_change


def test_idle_rate_is_taken_out_for_the_length_of_the_writes() -> None:
    per_change = load_per_change()
    # Idle: 10 ms of CPU in 5 s (0.2 % of a core). Writes: 500 ms in 10 s for 1,000 changes,
    # of which 20 ms is what the process would have spent idle anyway.
    assert per_change(0.010, 5.0, 0.500, 10.0, 1000) == pytest.approx(480e-6)


def test_a_process_that_did_nothing_for_the_changes_costs_nothing() -> None:
    per_change = load_per_change()
    assert per_change(0.004, 2.0, 0.020, 10.0, 500) == pytest.approx(0.0)
