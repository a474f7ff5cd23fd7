"""Evaluation micro-benchmark: flagedge's compiled engine vs flagd's Python engine.

Same flags, same run. Prints ns per evaluation (median of several timed runs, the two engines'
runs interleaved, after a warm-up) for a static flag, an if/in rule, a fractional rollout and
a sem_ver gate, and the speed-up ratio. Goal: >= 10x in every case.

Every evaluation, warm-up included, gets a context never seen before: its own targetingKey
and its own appVersion string, so the sem_ver parse cache (proxy/evaluation/jsonlogic/
semver.py) cannot answer a timed evaluation (the hits it could have are counted before each
timed run, and must be 0: versions it already holds, and versions repeated within the run).

Before timing, both engines evaluate every flag for the same contexts and must agree. For
fractional, openfeature-flagd-core 2.x hashes canonical CBOR of [flagKey, targetingKey]
where flagedge (like flagd-core 1.0 and @openfeature/flagd-core 4.0.1, the conformance
reference) hashes flagKey + targetingKey: there each engine's answer is checked against the
bucket its own hash input falls in under the flag's weights, computed here with mmh3, and
exact agreement is reported beside it. flagedge's hashing generation v3 (an environment's
``--fractional-hash v3``) hashes as flagd-core 2.x does: its answers must agree exactly, and it
is timed as ``fractional-v3`` (the v2 rows are the default generation's hot path).

    python bench/evaluator.py [--runs 7] [--n 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/evaluator.py` from a checkout

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from bisect import bisect_right  # noqa: E402
from itertools import accumulate  # noqa: E402
from typing import Any  # noqa: E402

import mmh3  # noqa: E402
from report import Row, at_least, at_most, finish, skipped  # noqa: E402

from proxy.evaluation.documents import compile_document  # noqa: E402
from proxy.evaluation.engine import evaluate  # noqa: E402
from proxy.evaluation.jsonlogic import semver  # noqa: E402
from proxy.model import FractionalHash  # noqa: E402

GOAL = 10.0
BOOL = {"on": True, "off": False}
SPLIT = [["on", 25], ["off", 75]]
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
            "targeting": {"fractional": SPLIT},
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
try:
    FLAGD_CORE_VERSION = importlib.metadata.version("openfeature-flagd-core")
except importlib.metadata.PackageNotFoundError:
    FLAGD_CORE_VERSION = "absent"
KEYS = ("static", "if-in", "fractional", "sem-ver")
COUNTRIES = ["DE", "US", "FR", "GB", "NL", "JP", "CH", "BR"]


def version(i: int) -> str:
    """The i-th version string: distinct for every i >= 0 (i is 30 x patch + 3 x minor +
    major - 3), majors 3-5 so that about 60 % pass ">= 4.2.0"."""
    return f"{3 + i % 3}.{(i // 3) % 10}.{i // 30}"


def contexts(start: int, n: int) -> list[dict[str, Any]]:
    """n contexts none of which shares a targetingKey or an appVersion with another start."""
    return [{"targetingKey": f"user-{i}", "country": COUNTRIES[i % len(COUNTRIES)],
             "appVersion": version(i)} for i in range(start, start + n)]


class Fresh:
    """Hands out ranges of context numbers that never repeat within the run."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> int:
        start, self.next = self.next, self.next + n
        return start


def as_openfeature(ctxs: list[dict[str, Any]]) -> list[Any]:
    from openfeature.evaluation_context import EvaluationContext

    return [EvaluationContext(targeting_key=c["targetingKey"],
                              attributes={k: v for k, v in c.items() if k != "targetingKey"})
            for c in ctxs]


def time_flagedge(flag_set: Any, key: str, items: list[Any]) -> float:
    """ns per evaluate() over ``items``; the loop calls the engine directly."""
    ev, clock = evaluate, time.perf_counter_ns
    t0 = clock()
    for c in items:
        ev(flag_set, key, c)
    return (clock() - t0) / len(items)


def time_flagd(core: Any, key: str, items: list[Any]) -> float:
    """The same for flagd's Python engine (resolve_boolean_value)."""
    resolve, clock = core.resolve_boolean_value, time.perf_counter_ns
    t0 = clock()
    for c in items:
        resolve(key, False, c)
    return (clock() - t0) / len(items)


# -- agreement -------------------------------------------------------------------------------
def bucket(hash_input: bytes, split: list[list[Any]]) -> Any:
    """flagd's fractional arithmetic on a given hash input: murmur3 (seed 0, unsigned), bucket
    = hash x total >> 32, the first variant whose cumulative weight exceeds it."""
    cum = list(accumulate(w for _, w in split))
    i = bisect_right(cum, (mmh3.hash(hash_input, 0, False) * cum[-1]) >> 32)
    return split[i][0]


def flagedge_hash_input(flag_key: str, targeting_key: str) -> bytes:
    return (flag_key + targeting_key).encode()


def flagd_core_hash_input(flag_key: str, targeting_key: str) -> bytes:
    """What openfeature-flagd-core hashes: canonical CBOR of [flagKey, targetingKey] from 2.0,
    the concatenated string before."""
    if FLAGD_CORE_VERSION.split(".")[0] in ("0", "1"):
        return flagedge_hash_input(flag_key, targeting_key)
    import cbor2

    return cbor2.dumps([flag_key, targeting_key], canonical=True)


def agreement(flag_set: Any, core: Any, ctxs: list[dict[str, Any]]) -> dict[str, int]:
    """Counts over ``ctxs``: answers that differ (static, if-in, sem-ver); fractional answers
    off their own hash input's bucket (either engine); fractional exact disagreements."""
    counts = {"differ": 0, "fractional_off_bucket": 0, "fractional_differ": 0}
    for c, oc in zip(ctxs, as_openfeature(ctxs), strict=True):
        for key in KEYS:
            ours = evaluate(flag_set, key, c).variant
            theirs = core.resolve_boolean_value(key, False, oc).variant
            if key != "fractional":
                counts["differ"] += ours != theirs
                continue
            tk = c["targetingKey"]
            counts["fractional_off_bucket"] += (
                (ours != bucket(flagedge_hash_input(key, tk), SPLIT))
                + (theirs != bucket(flagd_core_hash_input(key, tk), SPLIT)))
            counts["fractional_differ"] += ours != theirs
    return counts


# -- timing ----------------------------------------------------------------------------------
def cache_hits(items: list[dict[str, Any]]) -> int:
    """sem_ver parse-cache hits evaluating ``items`` could have: a version it already holds,
    or one seen earlier in the list."""
    versions = [c["appVersion"] for c in items]
    return sum(map(semver.is_cached, versions)) + len(versions) - len(set(versions))


def measure(flag_set: Any, core: Any, key: str, fresh: Fresh, n: int, base_n: int, runs: int
            ) -> tuple[float, float, int]:
    """Median ns per evaluation for each engine: ``runs`` interleaved timed runs, each on
    fresh contexts, after one warm-up run each (also fresh); and the parse-cache hits the
    timed runs could have had."""
    ours: list[float] = []
    base: list[float] = []
    hits = 0
    for i in range(runs + 1):
        items = contexts(fresh.take(n), n)
        hits += cache_hits(items) if i else 0
        base_items = as_openfeature(contexts(fresh.take(base_n), base_n))
        a, b = time_flagedge(flag_set, key, items), time_flagd(core, key, base_items)
        if i:  # the first is the warm-up (caches, specialisation)
            ours.append(a)
            base.append(b)
    return statistics.median(ours), statistics.median(base), hits


def cbor_step_ns(n: int) -> float:
    """ns per canonical CBOR encoding of [flagKey, targetingKey]: the part of flagd-core 2.x's
    fractional that flagedge's hashing does not have."""
    import cbor2

    keys = [f"user-{i}" for i in range(n)]
    dumps, clock = cbor2.dumps, time.perf_counter_ns
    t0 = clock()
    for k in keys:
        dumps(["fractional", k], canonical=True)
    return (clock() - t0) / n


def rows_for(timings: dict[str, tuple[float, float]]) -> list[Row]:
    return [at_least(f"{key}: flagd-core ns / flagedge ns per evaluation", base / ours, GOAL,
                     f"flagd-core {base:.0f} ns, flagedge {ours:.0f} ns")
            for key, (ours, base) in timings.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=20_000, help="evaluations per timed run (flagedge)")
    ap.add_argument("--check", type=int, default=2000, help="contexts in the agreement check")
    args = ap.parse_args()

    try:
        from openfeature.contrib.tools.flagd.core import FlagdCore
    except ImportError:
        return skipped("evaluator", "openfeature-flagd-core is not installed "
                                    "(pip install -e '.[bench]')")

    flag_set = compile_document(DOC)
    flag_set_v3 = compile_document(DOC, fractional_hash=FractionalHash.V3)
    core = FlagdCore()
    core.set_flags(DOC)
    fresh = Fresh()

    checked_ctxs = contexts(fresh.take(args.check), args.check)
    counts = agreement(flag_set, core, checked_ctxs)
    counts["fractional_v3_differ"] = sum(
        evaluate(flag_set_v3, "fractional", c).variant != theirs.variant
        for c, theirs in zip(checked_ctxs, (core.resolve_boolean_value("fractional", False, oc)
                                            for oc in as_openfeature(checked_ctxs)), strict=True))
    checked = f"{args.check} contexts"
    rows = [
        at_most("agreement: static, if-in, sem-ver answers that differ", counts["differ"], 0,
                f"{checked} x 3 flags"),
        at_most("agreement: fractional answers off their own hash's bucket",
                counts["fractional_off_bucket"], 0, f"{checked} x 2 engines"),
    ]
    if not FLAGD_CORE_VERSION.startswith(("0.", "1.")):
        rows.append(at_most("agreement: fractional v3 answers that differ from flagd-core",
                            counts["fractional_v3_differ"], 0, checked))
    print(f"agreement over {checked}: {counts['differ']} differing answers (static, if-in, "
          f"sem-ver); fractional: {counts['fractional_off_bucket']} off their bucket, "
          f"{counts['fractional_differ']} differ exactly between the engines "
          f"(openfeature-flagd-core {FLAGD_CORE_VERSION} hashes "
          f"{'flagKey + targetingKey' if flagd_core_hash_input('a', 'b') == b'ab' else 'CBOR [flagKey, targetingKey]'})")

    # the baseline is slow: fewer calls keep the run short, the median stays comparable
    base_n = max(1000, args.n // 10)
    print(f"{'case':<12} {'flagedge ns':>12} {'flagd-core ns':>14} {'speed-up':>9}")
    timings: dict[str, tuple[float, float]] = {}
    hits = 0
    for key in KEYS:
        ours, base, could_hit = measure(flag_set, core, key, fresh, args.n, base_n, args.runs)
        timings[key] = ours, base
        hits += could_hit
        print(f"{key:<12} {ours:>12.0f} {base:>14.0f} {base / ours:>8.1f}x")
    ours, base, _ = measure(flag_set_v3, core, "fractional", fresh, args.n, base_n, args.runs)
    timings["fractional-v3"] = ours, base
    print(f"{'fractional-v3':<12} {ours:>12.0f} {base:>14.0f} {base / ours:>8.1f}x")
    cbor_ns = cbor_step_ns(base_n)
    print(f"(flagd-core's CBOR step alone: {cbor_ns:.0f} ns per fractional evaluation)")
    rows += rows_for(timings)
    rows.append(at_most("sem_ver parse-cache hits in the timed runs", hits, 0,
                        f"{fresh.next} distinct contexts in all", unit=""))
    details = {"runs": args.runs, "n": args.n, "baseline_n": base_n,
               "flagd_core": FLAGD_CORE_VERSION, "agreement": counts,
               "ns": {k: {"flagedge": round(o, 1), "flagd_core": round(b, 1)}
                      for k, (o, b) in timings.items()},
               "flagd_core_cbor_ns": round(cbor_ns, 1)}
    return finish("evaluator", rows, details)


if __name__ == "__main__":
    sys.exit(main())
