"""Experiment statistics against published worked examples (DESIGN §11)."""

import math

import pytest

from proxy.insights.stats import (
    chi_square_fit,
    chi_square_sf,
    fisher_exact,
    holm,
    needs_exact,
    newcombe,
    wilson,
    z_test,
)


def rounded(pair: tuple[float, float]) -> tuple[float, float]:
    return round(pair[0], 4), round(pair[1], 4)


# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison
# of seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (score, no CC).
@pytest.mark.parametrize(("x", "n", "interval"), [
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_matches_newcombe_1998a(x, n, interval):
    assert rounded(wilson(x, n)) == interval


# Newcombe RG (1998), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Statistics in Medicine 17:873-890, Table II,
# method 10 (hybrid score, no CC).
@pytest.mark.parametrize(("counts", "interval"), [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
])
def test_newcombe_difference_matches_newcombe_1998b(counts, interval):
    assert rounded(newcombe(*counts)) == interval


def test_fisher_exact_matches_published_examples():
    # Fisher's lady tasting tea: 3 of 4 cups right each way, two-sided p = 34/70.
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(0.4857142857, rel=1e-9)
    # SciPy's documented example (whales and sharks, [[8, 2], [1, 5]]): p = 0.0349650...
    assert fisher_exact(8, 10, 1, 6) == pytest.approx(0.03496503496503496, rel=1e-12)
    # R's fisher.test(matrix(c(1, 11, 9, 3), 2)): p-value = 0.002759
    assert fisher_exact(1, 10, 11, 14) == pytest.approx(0.002759456, rel=1e-6)
    assert fisher_exact(0, 5, 0, 5) == 1.0  # nothing converted: no evidence at all


def test_z_test_is_the_pooled_two_proportion_test():
    # 56/70 vs 48/80: pooled 104/150, z = 0.2 / sqrt(p(1-p)(1/70 + 1/80)) = 2.6501
    pooled = 104 / 150
    z = 0.2 / math.sqrt(pooled * (1 - pooled) * (1 / 70 + 1 / 80))
    assert z == pytest.approx(2.6501, abs=1e-4)
    assert z_test(56, 70, 48, 80) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert z_test(56, 70, 48, 80) == pytest.approx(0.00805, abs=1e-5)
    assert z_test(5, 5, 7, 7) == 1.0 and z_test(0, 0, 3, 9) == 1.0  # undefined: no evidence


def test_small_tables_take_the_exact_test():
    assert needs_exact(3, 4, 1, 4) and needs_exact(1, 1000, 0, 1000)
    assert not needs_exact(100, 1000, 125, 1000)


def test_holm_matches_the_textbook_example():
    # Holm (1979) step-down: sorted p (0.005, 0.01, 0.03, 0.04) times (4, 3, 2, 1), monotone.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


# Critical values of the chi-square distribution (any statistics table, e.g. NIST/SEMATECH
# e-Handbook 1.3.6.7.4): the p-value there is the column's upper-tail probability.
@pytest.mark.parametrize(("x", "df", "p"), [
    (3.841, 1, 0.05), (10.828, 1, 0.001), (5.991, 2, 0.05), (13.816, 2, 0.001),
    (7.815, 3, 0.05), (16.266, 3, 0.001), (9.488, 4, 0.05), (18.467, 4, 0.001),
    (11.070, 5, 0.05), (20.515, 5, 0.001),
])
def test_chi_square_tail_matches_the_tables(x, df, p):
    assert chi_square_sf(x, df) == pytest.approx(p, rel=2e-3)


def test_sample_ratio_mismatch():
    even = chi_square_fit([50_000, 50_000], [50, 50])
    assert even.statistic == 0 and even.p_value == 1.0 and even.df == 1
    off = chi_square_fit([50_000, 51_000], [1, 1])  # 1 % off on 101,000 users
    assert off.statistic == pytest.approx(2 * 500**2 / 50_500)
    assert off.p_value < 0.01
    forced = chi_square_fit([600, 400], [50, 50])  # a 60/40 split against 50/50 weights
    assert forced.p_value < 0.001
    fine = chi_square_fit([332, 335, 333], [34, 33, 33])
    assert fine.p_value > 0.5 and fine.df == 2
    with pytest.raises(ValueError):
        chi_square_fit([1], [1])


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="0 <= converted <= assigned"):
        wilson(5, 3)
    with pytest.raises(ValueError):
        z_test(-1, 3, 0, 3)
