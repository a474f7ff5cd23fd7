"""The statistics of experiment results (DESIGN §11), standard library only.

Per variant, a conversion rate ``x / n`` gets a Wilson score interval; against the control,
the difference of two rates gets Newcombe's hybrid score interval (his method 10, built from
the two Wilson intervals) and a two-sided p-value: the pooled two-proportion z-test, or
Fisher's exact test when an expected cell count is under 5 (Cochran's rule, where the normal
approximation is poor). Several arms against one control are corrected with Holm's
step-down method. A sample-ratio mismatch (users split off the flag's weights) is a
chi-square goodness-of-fit test; a p-value under 0.001 means the split itself is broken and
no rate difference can be trusted.

Each is checked against published worked examples in tests/unit/insights/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
SRM_ALPHA = 0.001  # a sample-ratio p-value below this is a broken split, not bad luck
MIN_EXPECTED = 5  # Cochran: below this expected count a 2x2 table gets Fisher's exact test


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``x / n`` (no continuity correction);
    (0, 1) when ``n`` is 0: nothing is known."""
    _check_counts(x, n)
    if n == 0:
        return 0.0, 1.0
    p = x / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    scale = 1 + z2 / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``x1/n1 - x2/n2`` (1998, method 10)."""
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def z_test(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test; 1.0 when it is undefined (an
    empty arm, or every user converted or none did)."""
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[x1, n1-x1], [x2, n2-x2]]:
    the probability, with the margins fixed, of every table no more likely than the one
    observed (a relative tolerance of 1e-7 keeps ties that rounding would split, as R does)."""
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    converted, total = x1 + x2, n1 + n2
    lo, hi = max(0, converted - n2), min(n1, converted)
    denominator = math.comb(total, converted)

    def prob(a: int) -> float:  # P(first arm has ``a`` of the conversions)
        return math.comb(n1, a) * math.comb(n2, converted - a) / denominator

    observed = prob(x1)
    p = sum(q for q in map(prob, range(lo, hi + 1)) if q <= observed * (1 + 1e-7))
    return min(1.0, p)


def needs_exact(x1: int, n1: int, x2: int, n2: int) -> bool:
    """True when an expected count of the 2x2 table is under ``MIN_EXPECTED``."""
    total = n1 + n2
    if total == 0:
        return True
    converted = x1 + x2
    return any(row * col / total < MIN_EXPECTED
               for row in (n1, n2) for col in (converted, total - converted))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (same order as given): the i-th
    smallest is multiplied by (m - i), kept monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class ChiSquare:
    statistic: float
    df: int
    p_value: float


def chi_square_fit(observed: Sequence[int], weights: Sequence[float]) -> ChiSquare:
    """Goodness of fit of ``observed`` counts to the shares ``weights`` (any positive
    scale): Pearson's statistic and its p-value with ``len - 1`` degrees of freedom."""
    if len(observed) != len(weights) or len(observed) < 2:
        raise ValueError("chi-square needs two or more categories, one weight each")
    if any(w <= 0 for w in weights) or any(o < 0 for o in observed):
        raise ValueError("weights must be positive and counts non-negative")
    total, scale = sum(observed), sum(weights)
    if total == 0:
        return ChiSquare(0.0, len(observed) - 1, 1.0)
    stat = 0.0
    for o, w in zip(observed, weights, strict=True):
        expected = total * w / scale
        stat += (o - expected) ** 2 / expected
    df = len(observed) - 1
    return ChiSquare(stat, df, chi_square_sf(stat, df))


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with integer ``df``: the regularised upper
    incomplete gamma Q(df/2, x/2), in closed form for integer and half-integer shapes."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if x <= 0:
        return 1.0
    y = x / 2
    if df % 2 == 0:  # Q(m, y) = e^-y * sum_{i<m} y^i / i!
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= y / i
            total += term
        return min(1.0, math.exp(-y) * total)
    # Q(m + 1/2, y) = erfc(sqrt y) + e^-y * sum_{j=1..m} y^(j - 1/2) / Gamma(j + 1/2)
    total = math.erfc(math.sqrt(y))
    term = math.sqrt(y) / math.gamma(1.5)  # j = 1
    for j in range(1, (df - 1) // 2 + 1):
        if j > 1:
            term *= y / (j - 0.5)
        total += math.exp(-y) * term
    return min(1.0, total)


def _check_counts(x: int, n: int) -> None:
    if not 0 <= x <= n:
        raise ValueError(f"counts must satisfy 0 <= converted <= assigned, got {x}/{n}")
