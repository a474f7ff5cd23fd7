"""An experiment's results from its counts: per variant the conversion rate and its Wilson
interval; against the control the difference, its Newcombe interval and a Holm-corrected
p-value (z-test, or Fisher's exact test for small counts); the sample-ratio check. The
shape is ``flagedge insights experiment --json``'s (DESIGN §11). Pure: the counts come from
Redis elsewhere (the assignment store and the tracked conversions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.insights import stats

REPEATED_LOOKS = ("Checking results repeatedly and stopping at the first significant one "
                  "inflates false positives: decide the sample size (or the end date) first.")


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant of an experiment: users assigned by its split, and those who converted."""

    variant: str
    assigned: int
    converted: int


def experiment_report(flag: str, event: str, revision: str, arms: Sequence[Arm], control: str,
                      weights: Mapping[str, float]) -> dict[str, Any]:
    """``arms`` in the flag's variant order; ``control`` one of them; ``weights`` the split's
    weight per variant (for the sample-ratio check)."""
    by_name = {arm.variant: arm for arm in arms}
    if control not in by_name:
        raise ValueError(f"control variant {control!r} is not one of the experiment's variants")
    base = by_name[control]
    others = [arm for arm in arms if arm.variant != control]
    tests = [_compare(arm, base) for arm in others]
    adjusted = stats.holm([t["p_value_unadjusted"] for t in tests])
    compared = {arm.variant: {**t, "p_value": p}
                for arm, t, p in zip(others, tests, adjusted, strict=True)}
    variants = [{**_rate(arm), **compared.get(arm.variant, _CONTROL)} for arm in arms]
    return {"flag": flag, "event": event, "revision": revision, "control": control,
            "variants": variants, "srm": sample_ratio(arms, weights),
            "notes": [REPEATED_LOOKS]}


_CONTROL = {"diff": None, "diff_ci": None, "p_value": None, "p_value_unadjusted": None,
            "test": None}


def _rate(arm: Arm) -> dict[str, Any]:
    lo, hi = stats.wilson(arm.converted, arm.assigned)
    rate = arm.converted / arm.assigned if arm.assigned else None
    return {"variant": arm.variant, "assigned": arm.assigned, "converted": arm.converted,
            "rate": rate, "ci": [lo, hi]}


def _compare(arm: Arm, base: Arm) -> dict[str, Any]:
    counts = (arm.converted, arm.assigned, base.converted, base.assigned)
    if not arm.assigned or not base.assigned:
        return {"diff": None, "diff_ci": None, "p_value_unadjusted": 1.0, "test": None}
    exact = stats.needs_exact(*counts)
    p = stats.fisher_exact(*counts) if exact else stats.z_test(*counts)
    lo, hi = stats.newcombe(*counts)
    return {"diff": arm.converted / arm.assigned - base.converted / base.assigned,
            "diff_ci": [lo, hi], "p_value_unadjusted": p, "test": "fisher" if exact else "z"}


def sample_ratio(arms: Sequence[Arm], weights: Mapping[str, float]) -> dict[str, Any]:
    """The chi-square check of the assigned counts against the split's weights (variants
    weighted 0 are left out: nobody should be in them)."""
    weighted = [(arm.assigned, weights.get(arm.variant, 0)) for arm in arms]
    kept = [(n, w) for n, w in weighted if w > 0]
    if len(kept) < 2 or sum(n for n, _ in kept) == 0:
        return {"p_value": None, "warning": None}
    fit = stats.chi_square_fit([n for n, _ in kept], [w for _, w in kept])
    warning = None
    if fit.p_value < stats.SRM_ALPHA:
        warning = (f"sample ratio mismatch (chi-square p = {fit.p_value:.2g}): users are not "
                   "split as the weights say, so differences between variants cannot be "
                   "trusted; look for redirects, caching or bots that treat variants apart")
    return {"p_value": fit.p_value, "warning": warning}
