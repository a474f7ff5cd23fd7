"""The goal arithmetic of bench/soak.py (RSS growth over the second half, the p99 ratio) and
bench/propagation.py (alternating rounds, medians of the rounds)."""

from __future__ import annotations

import pytest

from tests.bench_module import load


def test_rss_growth_is_read_over_the_second_half() -> None:
    soak = load("soak")
    # buffers fill early (+30 MB by t=40 s), then flat: the second half grew 1 MB
    samples = [(0.0, 70.0), (10.0, 85.0), (20.0, 92.0), (40.0, 99.0), (60.0, 99.5),
               (80.0, 100.0), (100.0, 100.2), (120.4, 100.5)]
    assert soak.rss_growth(samples) == pytest.approx((1.0, 60.0))
    leak = [(float(t), 70.0 + t / 4) for t in range(0, 130, 10)]  # 2.5 MB every 10 s
    growth, since = soak.rss_growth(leak)
    assert since == 60.0 and growth == pytest.approx(15.0)


def test_soak_rows_fail_on_each_goal_alone() -> None:
    soak = load("soak")
    flat = [(0.0, 90.0), (10.0, 99.0), (20.0, 99.5)]
    ok = {"quiet windows": 0.0010, "storm windows": 0.00105}

    def passed(errors=(0, 0), open_end=1000.0, rss=flat, p99=ok) -> list[bool]:
        return [r.passed for r in soak.goals(errors, open_end, 1000, rss, p99)]

    assert passed() == [True, True, True, True]
    assert passed(errors=(0, 3)) == [False, True, True, True]
    assert passed(errors=(5, 0)) == [True, True, True, True]  # before the readers: not a goal
    assert passed(open_end=990.0) == [True, False, True, True]
    assert passed(rss=[(0.0, 90.0), (10.0, 99.0), (20.0, 105.0)]) == [True, True, False, True]
    assert passed(p99={"quiet windows": 0.0010, "storm windows": 0.0012}) == [
        True, True, True, False]
    row = soak.goals((0, 0), 1000.0, 1000, flat, ok)[3]
    assert row.what.endswith("storm windows / quiet windows")
    assert row.baseline == "quiet windows 1.00 ms, storm windows 1.05 ms"


def test_propagation_rounds_split_the_writes_and_take_medians() -> None:
    propagation = load("propagation")
    assert propagation.split(1000, 5) == [200] * 5
    assert propagation.split(7, 3) == [3, 2, 2]
    rounds = [[1.0] * 99 + [9.0], [2.0] * 99 + [50.0], [1.5] * 100]
    p50, p99 = propagation.medians(rounds)
    assert p50 == 1.5
    assert p99 == 1.5  # one round's outlier moves its own p99 only (the rounds' p99s: 1, 2, 1.5)
