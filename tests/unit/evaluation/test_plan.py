"""Bulk evaluation plans (issue 27): flags grouped by what they read, each group memoised on
the typed values of those attributes. A memo hit must give exactly what evaluating gives:
1, 1.0 and True are different keys (Python finds them equal), a missing attribute is not
null, and values that cannot be hashed skip the memo."""

from __future__ import annotations

import dataclasses
import gc
import random
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest

from proxy.evaluation import plan as plan_module
from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate, evaluate_all
from proxy.evaluation.plan import derive_plan, memo_bytes, plan_of, typed
from proxy.model import EvaluationResult, Flag, FlagSet, FlagState, Reason, VariantType
from proxy.sources.assemble import apply_change
from tests.conformance.generator import generate

BOOL = {"on": True, "off": False}


def doc(**targeting: Any) -> dict[str, Any]:
    variants = {"1": "one", "true": "yes", "a": "A", "b": "B", "off": "-"}
    return {"flags": {key: {"state": "ENABLED", "variants": variants, "defaultVariant": "off",
                            "targeting": rule} for key, rule in targeting.items()}}


def variants(fs: FlagSet, context: dict[str, Any]) -> list[str | None]:
    return [r.variant for r in evaluate_all(fs, context)]


def test_true_and_1_are_different_keys() -> None:
    fs = compile_document(doc(f={"var": "x"}))  # names the variant "1" or "true"
    seen = [variants(fs, {"x": x}) for x in (1, True, 1, True, "1", "true")]
    assert seen == [["1"], ["true"], ["1"], ["true"], ["1"], ["true"]]
    assert evaluate_all(fs, {"x": False})[0].error_code is not None  # "false": no variant
    assert len(plan_of(fs).groups[0].young) == 4  # 1, True, "1", "true" (errors never are)


def test_a_missing_attribute_is_not_null() -> None:
    fs = compile_document(doc(f={"if": [{"missing": ["x"]}, "a", "b"]}))
    assert [variants(fs, c) for c in ({}, {"x": None}, {}, {"x": None})] == [
        ["a"], ["b"], ["a"], ["b"]]


def by_type(d: Mapping[str, Any]) -> str:
    """A rule only a non-JSON-logic caller could write: it names the value's Python type."""
    if "x" not in d:
        return "missing"
    x = d["x"]
    if x.__class__ is tuple:  # hashable, but 1 and True inside would make equal keys
        return f"tuple-{x[0].__class__.__name__}"
    return "neg" if x.__class__ is float and str(x).startswith("-") else x.__class__.__name__


def test_ints_floats_bools_and_signed_zeros_are_different_keys() -> None:
    """JsonLogic treats 1 and 1.0 alike, but the memo must not assume it of any rule."""
    names = ["int", "float", "bool", "neg", "NoneType", "str", "missing", "tuple-int",
             "tuple-bool"]
    results = {n: EvaluationResult("f", Reason.TARGETING_MATCH, n, n, {}) for n in names}
    flag = Flag(key="f", state=FlagState.ENABLED, variants={n: n for n in names},
                variant_type=VariantType.STRING, default_variant=None, metadata={}, raw={},
                rule=by_type, match_results=results, reads_flagd=False, reads=frozenset({"x"}))
    fs = FlagSet(flags={"f": flag}, reads=frozenset({"x", "targetingKey"}))
    contexts = [{"x": 1}, {"x": 1.0}, {"x": True}, {"x": 0.0}, {"x": -0.0}, {"x": 0},
                {"x": False}, {"x": None}, {"x": "1"}, {}, {"x": (1,)}, {"x": (True,)}]
    expected = ["int", "float", "bool", "float", "neg", "int", "bool", "NoneType", "str",
                "missing", "tuple-int", "tuple-bool"]
    for _ in range(2):  # the second round is served by the memo
        got = [evaluate_all(fs, c)[0] for c in contexts]
        assert [r.variant for r in got] == expected
        assert all(r is results[r.variant] for r in got)


def test_objects_and_arrays_skip_the_memo() -> None:
    """(Other values a non-JSON caller may pass, tuples, skip it too: above.)"""
    fs = compile_document(doc(f={"if": [{"==": [{"var": "x.a"}, 1]}, "a", "b"]},
                              g={"if": [{"==": [{"var": "x.0"}, "v"]}, "a", "b"]}))
    for _ in range(2):
        assert variants(fs, {"x": {"a": 1}}) == ["a", "b"]
        assert variants(fs, {"x": {"a": 2}}) == ["b", "b"]
        assert variants(fs, {"x": ["v"]}) == ["b", "a"]
        assert variants(fs, {"x": ["w"]}) == ["b", "b"]
        assert variants(fs, {"x": "v"}) == ["b", "a"]  # a string: memoised
    assert list(plan_of(fs).groups[0].young) == ["v"]


def test_results_are_the_compilers_own_objects_and_static_flags_are_not_run() -> None:
    fs = compile_document({"flags": {
        "s": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"},
        "t": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off",
              "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}},
        "d": {"state": "DISABLED", "variants": BOOL, "defaultVariant": "on"}}})
    for context in ({"plan": "pro"}, {"plan": "pro"}, {"plan": "free"}, {}):
        s, t, d = evaluate_all(fs, context)
        assert s is fs.flags["s"].static_result and d is fs.flags["d"].static_result
        assert t in (fs.flags["t"].match_results["on"], fs.flags["t"].default_result)
    plan = plan_of(fs)
    assert [f.key for g in plan.groups for f in g.flags] == ["t"]
    assert plan_of(fs) is plan  # built once per flag set...
    assert plan_of(dataclasses.replace(fs, version=2)) is not plan  # ...and per flag set


def test_errors_are_evaluated_every_time() -> None:
    fs = compile_document(doc(f={"var": "x"}))
    first, again = evaluate_all(fs, {"x": "nope"})[0], evaluate_all(fs, {"x": "nope"})[0]
    assert first.error_code is not None and first is not again  # built per request, as before
    assert not plan_of(fs).groups[0].young


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "MEMO_BOUND", 8)
    fs = compile_document(doc(f={"if": [{"==": [{"var": "x"}, "a"]}, "a", "b"]}))
    group = plan_of(fs).groups[0]
    for i in range(100):
        assert variants(fs, {"x": "a" if i % 3 == 0 else f"x{i}"}) == ["a" if i % 3 == 0 else "b"]
        assert len(group.young) <= 8 and len(group.old) <= 8
    assert "a" in group.young  # in use all along: promoted, never aged out


def outcome(r: EvaluationResult) -> tuple[Any, ...]:
    return (r.key, r.variant, repr(r.value), r.reason, r.error_code, r.error_details,
            dict(r.metadata))


def test_bulk_equals_one_by_one_on_generated_documents() -> None:
    """The conformance generator's documents and contexts (every operator, nested paths,
    $refs, fractional): evaluate_all, memo cold and warm and in shuffled order, gives what
    evaluating each flag on its own gives."""
    rnd = random.Random(27)
    checked = 0
    for generated in generate(seed=2727, n_docs=300).docs:
        fs = compile_document(generated.doc, tolerant=True)
        contexts = [c.context for c in generated.cases] * 2
        rnd.shuffle(contexts)
        for context in contexts:
            expected = [outcome(evaluate(fs, key, context)) for key in fs.flags]
            assert [outcome(r) for r in evaluate_all(fs, context)] == expected, (
                generated.doc, context)
            checked += 1
    assert checked > 2000


def test_a_memo_that_does_not_pay_is_dropped_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never-seen targetingKeys against a group that reads it: every lookup misses, so the
    group evaluates without its memo for SKIP evaluations, then tries it again; a group
    whose keys repeat keeps its memo."""
    monkeypatch.setattr(plan_module, "WINDOW", 16)
    monkeypatch.setattr(plan_module, "SKIP", 32)
    fs = compile_document(doc(f={"if": [{"==": [{"var": "targetingKey"}, "u3"]}, "a", "b"]},
                              g={"if": [{"==": [{"var": "plan"}, "pro"]}, "a", "b"]}))
    by_key, by_plan = plan_of(fs).groups
    for i in range(16):
        assert variants(fs, {"targetingKey": f"u{i}", "plan": "pro"}) == [
            "a" if i == 3 else "b", "a"]
    assert by_key.skip == 32 and not by_key.young  # off, its keys dropped
    assert by_plan.skip == 0 and list(by_plan.young) == ["pro"]
    for _ in range(32):
        assert variants(fs, {"targetingKey": "u3", "plan": "free"}) == ["a", "b"]
    assert by_key.skip == 0 and not by_key.young  # back on at the next evaluation
    assert variants(fs, {"targetingKey": "u3"}) == ["a", "b"]
    assert list(by_key.young) == ["u3"]


SHAPES = [("static", None), ("disabled", None), ("if", "plan"), ("if", "country"),
          ("if", "targetingKey"), ("fractional", None)]


def random_flag(rnd: random.Random, shape: tuple[str, str | None]) -> dict[str, Any]:
    """A flag of one shape (static, disabled, targeted on one attribute, fractional) with
    random variants and literals: a change of literals keeps the plan's shape, a change of
    shape moves the flag to another group or makes it static."""
    kind, attr = shape
    flag: dict[str, Any] = {"state": "DISABLED" if kind == "disabled" else "ENABLED",
                            "variants": {"a": "A", "b": "B", "c": "C"},
                            "defaultVariant": rnd.choice("abc")}
    if kind == "if":
        flag["targeting"] = {"if": [{"==": [{"var": attr}, rnd.choice(["pro", "DE", "u1"])]},
                                    rnd.choice("abc"), None]}
    elif kind == "fractional":
        flag["targeting"] = {"fractional": [["a", rnd.randrange(1, 5)], ["b", 1], ["c", 1]]}
    return flag


def test_derived_plans_give_what_fresh_plans_give() -> None:
    """A run of versions, each changing a few flags as the Redis source applies a change, with
    every plan derived from the one before (as the bulk endpoint does at publish time): the
    results equal evaluating each flag on its own, memos carried over and patched included."""
    rnd = random.Random(5)
    keys = [f"f{i:02d}" for i in range(30)]
    shapes = {k: rnd.choice(SHAPES) for k in keys}
    fs = compile_document({"flags": {k: random_flag(rnd, shapes[k]) for k in keys}}, version=1)
    contexts = [{"targetingKey": f"u{i % 4}", "plan": rnd.choice(["pro", "free"]),
                 "country": rnd.choice(["DE", "US"])} for i in range(12)]
    derived = 0
    for version in range(2, 120):
        for context in contexts:  # fill the memos this version's plan hands on
            evaluate_all(fs, context)
        changed = rnd.sample(keys, rnd.randrange(1, 4))
        for key in changed:
            if rnd.random() < 0.15:
                shapes[key] = rnd.choice(SHAPES)
        after = {"flags": {key: random_flag(rnd, shapes[key]) for key in changed}}
        new, _change, _rejected = apply_change(fs, "e", version, after, None)
        derive_plan(fs, new)
        derived += new.plan is not None
        previous_groups = {id(g) for g in plan_of(fs).groups}
        for context in rnd.sample(contexts, 6):
            expected = [outcome(evaluate(new, key, context)) for key in new.flags]
            assert [outcome(r) for r in evaluate_all(new, context)] == expected, version
        if new.plan is not None and new.plan.lineage:
            kept = [g for g in plan_of(new).groups if id(g) in previous_groups]
            moved = {k for k in keys if new.flags[k] is not fs.flags[k]}
            assert all(not {f.key for f in g.flags} & moved for g in kept)
        fs = new
    assert derived > 40  # most changes keep the plan's shape


def test_a_derived_group_answers_from_its_parents_memo() -> None:
    fs = compile_document(doc(f={"if": [{"==": [{"var": "plan"}, "pro"]}, "a", "b"]},
                              g={"if": [{"==": [{"var": "plan"}, "pro"]}, "b", "a"]}))
    assert variants(fs, {"plan": "pro"}) == ["a", "b"]
    flipped = doc(g={"if": [{"==": [{"var": "plan"}, "pro"]}, "1", "b"]})["flags"]["g"]
    new, _change, _rejected = apply_change(fs, "e", 2, {"flags": {"g": flipped}}, None)
    derive_plan(fs, new)
    group = plan_of(new).groups[0]
    assert group.parent is plan_of(fs).groups[0] and group.stale == (1,)
    assert variants(new, {"plan": "pro"}) == ["a", "1"]  # f from the parent, g run again
    assert group.young[typed("pro")][0] is fs.flags["f"].match_results["a"]
    assert variants(new, {"plan": "free"}) == ["b", "b"]  # not in the parent's memo: run


def test_long_strings_are_never_memoised() -> None:
    """Memo keys keep their strings alive: an adversary's 60 KB appVersion must not sit in
    thousands of them (bench/memory.py)."""
    fs = compile_document(doc(f={"if": [{"starts_with": [{"var": "v"}, "2."]}, "a", "b"]}))
    long = "2." + "1" * plan_module.MAX_KEY_STRING
    assert variants(fs, {"v": long}) == ["a"] and variants(fs, {"v": long}) == ["a"]
    assert variants(fs, {"v": "1.0.0"}) == ["b"]
    assert list(plan_of(fs).groups[0].young) == ["1.0.0"]


def test_memos_are_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unique keys of 200 characters that still hit often enough to keep the memo on: the
    memo holds at most two generations of its share of the plan's bytes, on the heap too."""
    monkeypatch.setattr(plan_module, "MEMO_BYTES", 64 * 1024)
    monkeypatch.setattr(plan_module, "MIN_GROUP_BYTES", 16 * 1024)
    fs = compile_document(doc(f={"if": [{"==": [{"var": "x"}, "a"]}, "a", "b"]},
                              g={"if": [{"==": [{"var": "y"}, "a"]}, "a", "b"]}))
    group = plan_of(fs).groups[0]
    assert group.share == 32 * 1024

    def fill() -> None:
        for i in range(3000):
            evaluate_all(fs, {"x": "a"})  # hits keep the memo on
            evaluate_all(fs, {"x": f"{i:08d}" + "x" * 192})
            assert group.young_bytes <= group.share

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert group.skip == 0 and len(group.young) + len(group.old) < 3000
    assert held <= 2 * group.share * 1.15, held
    assert 0.9 * held <= memo_bytes(fs) <= 1.3 * held, (memo_bytes(fs), held)
