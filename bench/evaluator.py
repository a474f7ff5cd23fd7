"""Evaluation micro-benchmark: flagedge's compiled engine vs flagd's Python engine.

Same flags, same contexts, same run. Prints ns per evaluation (median of several timed
runs after a warm-up) for a static flag, an if/in rule, a fractional rollout and a sem_ver
gate, and the speed-up ratio. Goal: >= 10x in every case.

    python bench/evaluator.py [--runs 7] [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate

BOOL = {"on": True, "off": False}
DOC: dict[str, Any] = {
    "flags": {
        "static": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"},
        "if-in": {
            "state": "ENABLED",
            "variants": BOOL,
            "defaultVariant": "off",
            "targeting": {"if": [{"in": [{"var": "country"}, ["DE", "FR", "NL", "AT", "CH"]]}, "on", "off"]},
        },
        "fractional": {
            "state": "ENABLED",
            "variants": BOOL,
            "defaultVariant": "off",
            "targeting": {"fractional": [["on", 25], ["off", 75]]},
        },
        "sem-ver": {
            "state": "ENABLED",
            "variants": BOOL,
            "defaultVariant": "off",
            "targeting": {"if": [{"sem_ver": [{"var": "appVersion"}, ">=", "4.2.0"]}, "on", "off"]},
        },
    },
    "metadata": {"flagSetId": "bench"},
}
COUNTRIES = ["DE", "US", "FR", "GB", "NL", "JP", "CH", "BR"]


def contexts(n: int) -> list[dict[str, Any]]:
    return [
        {
            "targetingKey": f"user-{i}",
            "country": COUNTRIES[i % len(COUNTRIES)],
            "appVersion": f"{3 + i % 3}.{i % 7}.{i % 5}",
        }
        for i in range(n)
    ]


def _median_ns(loop: Any, items: list[Any], runs: int) -> float:
    loop(items)  # warm-up (caches, specialisation)
    return statistics.median(loop(items) / len(items) for _ in range(runs))


def time_flagedge(flag_set: Any, key: str, items: list[Any], runs: int) -> float:
    """Median ns per evaluate() over `items`; the loop calls the engine directly."""

    def loop(items: list[Any]) -> int:
        ev, clock = evaluate, time.perf_counter_ns
        t0 = clock()
        for c in items:
            ev(flag_set, key, c)
        return clock() - t0

    return _median_ns(loop, items, runs)


def time_flagd(core: Any, key: str, items: list[Any], runs: int) -> float:
    """The same for flagd's Python engine (resolve_boolean_value)."""

    def loop(items: list[Any]) -> int:
        resolve, clock = core.resolve_boolean_value, time.perf_counter_ns
        t0 = clock()
        for c in items:
            resolve(key, False, c)
        return clock() - t0

    return _median_ns(loop, items, runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=20_000, help="evaluations per timed run (flagedge)")
    args = ap.parse_args()

    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    flag_set = compile_document(DOC)
    baseline = FlagdCore()
    baseline.set_flags(DOC)

    ctxs = contexts(1000)
    ours_items = (ctxs * (args.n // len(ctxs) + 1))[: args.n]
    # the baseline is slow: fewer calls keep the run short, the median stays comparable
    base_n = max(1000, args.n // 10)
    of_ctxs = [
        EvaluationContext(targeting_key=c["targetingKey"], attributes={k: v for k, v in c.items() if k != "targetingKey"})
        for c in ctxs
    ]
    base_items = (of_ctxs * (base_n // len(of_ctxs) + 1))[:base_n]

    # sanity: both engines agree on the variant where they hash the same way
    for key in ("static", "if-in", "sem-ver"):
        for c, oc in zip(ctxs[:200], of_ctxs[:200], strict=True):
            ours = evaluate(flag_set, key, c)
            theirs = baseline.resolve_boolean_value(key, False, oc)
            if ours.variant != theirs.variant:
                print(f"MISMATCH {key} {c}: {ours.variant} vs {theirs.variant}", file=sys.stderr)
                return 1

    print(f"{'case':<12} {'flagedge ns':>12} {'flagd-core ns':>14} {'speed-up':>9}")
    worst = float("inf")
    for key in ("static", "if-in", "fractional", "sem-ver"):
        # interleave the two engines' timed runs so both see the same machine load
        ours, base = [], []
        for _ in range(args.runs):
            ours.append(time_flagedge(flag_set, key, ours_items, 1))
            base.append(time_flagd(baseline, key, base_items, 1))
        ns_ours, ns_base = statistics.median(ours), statistics.median(base)
        ratio = ns_base / ns_ours
        worst = min(worst, ratio)
        print(f"{key:<12} {ns_ours:>12.0f} {ns_base:>14.0f} {ratio:>8.1f}x")
    print(f"worst speed-up {worst:.1f}x (goal >= 10x): {'OK' if worst >= 10 else 'BELOW GOAL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
