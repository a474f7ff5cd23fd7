"""Property tests: fractional distribution, stickiness and monotonic rollout; validation and
evaluation never raise, whatever the JSON."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.evaluation.documents import compile_document, validate_document
from proxy.evaluation.engine import evaluate, evaluate_all
from proxy.evaluation.jsonlogic.table import OPERATORS
from proxy.model import EvaluationResult, Problem

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = [f"user-{i}" for i in range(100_000)]


def fractional_rule(buckets: list[list[Any]], key: str = "rollout") -> Any:
    names = {b[0]: b[0] for b in buckets}
    fs = compile_document({"flags": {key: {"state": "ENABLED", "variants": names, "defaultVariant": buckets[0][0],
                                           "targeting": {"fractional": buckets}}}})
    return fs, fs.flags[key].rule


@settings(max_examples=4, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=100), min_size=2, max_size=4))
def test_distribution_within_one_percent_over_100k_keys(weights: list[int]) -> None:
    buckets = [[f"v{i}", w] for i, w in enumerate(weights)]
    _, rule = fractional_rule(buckets)
    counts = dict.fromkeys((b[0] for b in buckets), 0)
    for k in KEYS:
        counts[rule({"targetingKey": k})] += 1
    total = sum(weights)
    for (name, w) in buckets:
        assert abs(counts[name] / len(KEYS) - w / total) <= 0.01, (weights, counts)


@FAST
@given(st.text(min_size=1, max_size=40), st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=5))
def test_sticky(targeting_key: str, weights: list[int]) -> None:
    buckets = [[f"v{i}", w] for i, w in enumerate(weights)]
    fs1, _ = fractional_rule(buckets)
    fs2, _ = fractional_rule(buckets)  # recompiled: same answer
    ctx = {"targetingKey": targeting_key}
    first = evaluate(fs1, "rollout", ctx)
    assert all(evaluate(fs1, "rollout", ctx) == first for _ in range(3))
    assert evaluate(fs2, "rollout", ctx) == first


@FAST
@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=100), st.lists(st.text(min_size=1, max_size=12), min_size=20, max_size=60))
def test_growing_the_rollout_never_moves_a_user_out(w1: int, w2: int, keys: list[str]) -> None:
    lo, hi = sorted((w1, w2))
    _, small = fractional_rule([["on", lo], ["off", 100 - lo]])
    _, large = fractional_rule([["on", hi], ["off", 100 - hi]])
    for k in keys:
        if small({"targetingKey": k}) == "on":
            assert large({"targetingKey": k}) == "on"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)
OPS = sorted(OPERATORS)


def logic(depth: int = 3) -> st.SearchStrategy[Any]:
    leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "0", "a", "1.2.3", "x", "$flagd.flagKey"]) | st.builds(lambda k: {"var": k}, st.sampled_from(["x", "y", "s", "", "arr", "targetingKey", "n.m"]))
    if depth == 0:
        return leaf
    sub = logic(depth - 1)
    op = st.builds(lambda o, args: {o: args}, st.sampled_from(OPS), st.lists(sub, max_size=4) | sub)
    return leaf | op | st.lists(sub, max_size=3)


contexts = st.fixed_dictionaries({}, optional={
    "x": json_values, "y": json_values, "s": st.text(max_size=6), "arr": st.lists(st.integers(-3, 3), max_size=4),
    "targetingKey": st.text(max_size=8), "n": json_values,
})


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_validate_never_raises_on_arbitrary_json(doc: Any) -> None:
    problems = validate_document(doc)
    assert all(isinstance(p, Problem) for p in problems)
    assert validate_document({"flags": {"f": doc}}) is not None
    assert validate_document({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": doc}}}) is not None


@settings(max_examples=300, deadline=None)
@given(logic(), contexts)
def test_random_logic_validates_and_evaluates_without_raising(rule: Any, ctx: dict[str, Any]) -> None:
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2, "true": 3, "false": 4}, "defaultVariant": "a",
                           "targeting": {"if": [rule, "a", rule]}}}}
    problems = validate_document(doc)
    assert all(isinstance(p, Problem) for p in problems)
    if problems:
        return
    fs = compile_document(doc)
    r = evaluate(fs, "f", ctx)
    assert isinstance(r, EvaluationResult)
    assert r.has_value or r.error_code is not None or r.variant is None
    assert evaluate_all(fs, ctx) == [r]
