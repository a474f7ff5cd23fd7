"""Fuzzing the rule compiler and validator (complements
tests/unit/evaluation/test_properties.py, which fuzzes one flag's targeting with well-formed
operators): whole random documents with ``$evaluators``/``$ref``, malformed operator
arguments, hostile depths and sizes.

Properties: nothing but ``InvalidDocument`` escapes ``validate_document``/``compile_document``,
``evaluate``/``evaluate_all``/``explain`` never raise, both agree on validity, every problem
about a flag names it in its path, and hostile inputs are answered quickly (hypothesis
deadlines, plus explicit wall-clock bounds on the huge/deep cases)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.evaluation.documents import compile_document, load_document, validate_document
from proxy.evaluation.engine import evaluate, evaluate_all, explain
from proxy.evaluation.jsonlogic.table import OPERATORS
from proxy.model import ErrorCode, EvaluationResult, InvalidDocument, Problem

pytestmark = pytest.mark.slow  # ~30 s of fuzzing and hostile sizes: not in test-fast

# Deadlines catch hangs; generous because the machine is shared (2 cores, other suites).
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["", "0", "a", "b", "on", "1.2.3", "v1", "$flagd.flagKey",
                              "$flagd.timestamp", "targetingKey", "x.y", "é✓", "\x00"])
           | st.text(max_size=10))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=20)
OPS = sorted(OPERATORS)
EVALUATOR_NAMES = ["e1", "e2", "e3"]


def logic(depth: int) -> st.SearchStrategy[Any]:
    """Random JsonLogic: any operator with any arguments (often wrong ones), vars, $refs to
    evaluators that may or may not exist (and may refer to each other)."""
    leaf = (scalars
            | st.builds(lambda k: {"var": k}, st.sampled_from(
                ["x", "n", "s", "arr", "obj.k", "targetingKey", "$flagd.flagKey",
                 "$flagd.timestamp", "", "missing.deep"]))
            | st.builds(lambda n: {"$ref": n}, st.sampled_from([*EVALUATOR_NAMES, "nope"])))
    if depth == 0:
        return leaf
    sub = logic(depth - 1)
    op = st.builds(lambda o, a: {o: a}, st.sampled_from([*OPS, "bogus", "$ref"]),
                   st.lists(sub, max_size=4) | sub)
    weird = st.dictionaries(st.sampled_from(OPS), sub, min_size=2, max_size=3)  # 2 operators
    return leaf | op | st.lists(sub, max_size=3) | weird


variant_sets = st.one_of(
    st.dictionaries(st.sampled_from(["on", "off", "a", "b", "true", "false"]), st.booleans(),
                    min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=6), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]),
                    st.integers(-1000, 1000) | st.floats(-1e6, 1e6), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.dictionaries(st.text(max_size=4), json_values,
                                                                 max_size=3), min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=4), json_values, max_size=3),  # mixed/invalid types
    json_values,  # not even an object
)

flags = st.fixed_dictionaries(
    {"state": st.sampled_from(["ENABLED", "DISABLED"]) | scalars,
     "variants": variant_sets},
    optional={"defaultVariant": st.sampled_from(["on", "off", "a", "b", "c", "zz"]) | scalars,
              "targeting": st.just({}) | logic(3) | json_values,
              "metadata": st.dictionaries(st.text(max_size=4), scalars, max_size=3) | json_values},
)
documents = st.fixed_dictionaries(
    {"flags": st.dictionaries(st.sampled_from(["f", "g", "with.dot", "ü", "a/b", ""]), flags,
                              max_size=3)},
    optional={"$evaluators": st.dictionaries(st.sampled_from(EVALUATOR_NAMES), logic(2),
                                             max_size=3) | json_values,
              "metadata": st.dictionaries(st.text(max_size=4), scalars, max_size=3),
              "$schema": st.text(max_size=10)},
)
contexts = st.fixed_dictionaries({}, optional={
    "x": json_values, "n": json_values, "s": st.text(max_size=8),
    "arr": st.lists(json_values, max_size=5), "obj": st.dictionaries(st.text(max_size=3), json_values, max_size=3),
    "targetingKey": st.text(max_size=8) | scalars,
})


def check_results(fs: Any, ctx: dict[str, Any]) -> None:
    every = evaluate_all(fs, ctx)
    assert {r.key for r in every} == set(fs.flags)
    for r in every:
        assert isinstance(r, EvaluationResult)
        if ctx.get("targetingKey") is not None and not isinstance(ctx["targetingKey"], str):
            assert r.error_code is ErrorCode.INVALID_CONTEXT
        single = evaluate(fs, r.key, ctx)
        assert isinstance(single, EvaluationResult)
        result, path = explain(fs, r.key, ctx)
        assert isinstance(result, EvaluationResult) and all(isinstance(p, str) for p in path)
        orjson.dumps(single.to_ofrep())  # whatever a rule produced is servable as JSON
    assert evaluate(fs, "no-such-flag", ctx).error_code is ErrorCode.FLAG_NOT_FOUND


@FUZZ
@given(documents, contexts)
def test_random_documents_validate_compile_and_evaluate_without_escaping(doc: Any, ctx: Any) -> None:
    problems = validate_document(doc)
    assert all(isinstance(p, Problem) and isinstance(p.path, str) and p.message for p in problems)
    # Through JSON too, as the CLI and every source see it.
    assert validate_document(orjson.dumps(doc)) == problems
    check_tolerant(doc, ctx, problems)
    try:
        fs = compile_document(doc)
    except InvalidDocument as exc:
        assert problems, "compile_document refused a document validate_document accepted"
        assert exc.problems == problems
        for p in problems:
            if p.path.startswith("flags."):
                key = next(k for k in doc["flags"] if p.path.startswith(f"flags.{k}"))
                assert key is not None
        return
    assert not problems
    check_results(fs, ctx)


def check_tolerant(doc: Any, ctx: Any, problems: list[Problem]) -> None:
    """As a source serves it (issue 26): only a document that is no flag document is
    refused; otherwise every flag is served (valid ones as compiled, invalid ones as their
    PARSE_ERROR/GENERAL) and nothing escapes evaluation."""
    try:
        fs = compile_document(doc, tolerant=True)
    except InvalidDocument:
        assert not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict)
        return
    assert set(fs.flags) == {k for k in doc["flags"] if k}
    assert set(fs.rejected) <= {*fs.flags, ""}
    assert bool(fs.rejected) == any(not p.warning for p in problems)
    for key, flag in fs.flags.items():
        if key in fs.rejected:
            assert flag.static_result.error_code in (ErrorCode.PARSE_ERROR, ErrorCode.GENERAL)
    check_results(fs, ctx)


@FUZZ
@given(st.dictionaries(st.sampled_from(["f", "g"]), flags, min_size=1, max_size=2),
       st.sampled_from(["f", "g"]))
def test_a_broken_flag_is_named_in_every_problem_it_causes(good_or_bad: dict[str, Any], name: str) -> None:
    """A valid flag next to random ones: each problem concerning a flag has a path that starts
    with ``flags.<that key>``, and the valid flag never gets one."""
    doc = {"flags": {**good_or_bad, "ok": {"state": "ENABLED", "variants": {"a": 1},
                                           "defaultVariant": "a"}}}
    for p in validate_document(doc):
        assert p.path.startswith(("flags.f", "flags.g")), p


@settings(max_examples=200, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(json_values, json_values)
def test_any_json_anywhere_in_a_document(doc: Any, part: Any) -> None:
    for candidate in (doc, {"flags": doc}, {"flags": {"f": doc}}, {"flags": {}, "$evaluators": doc},
                      {"flags": {"f": {"state": "ENABLED", "variants": part, "defaultVariant": doc}}},
                      {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": doc,
                                       "metadata": part}}}):
        problems = validate_document(candidate)
        check_tolerant(candidate, {}, problems)
        try:
            compile_document(candidate)
        except InvalidDocument as exc:
            assert exc.problems == problems and problems
        else:
            assert problems == []


# -- explicit hostile shapes ------------------------------------------------------------
def flag_doc(targeting: Any = None, variants: Any = None, evaluators: Any = None) -> dict[str, Any]:
    flag: dict[str, Any] = {"state": "ENABLED", "variants": variants or {"a": "A", "b": "B"},
                            "defaultVariant": "a"}
    if targeting is not None:
        flag["targeting"] = targeting
    doc: dict[str, Any] = {"flags": {"deep-flag": flag}}
    if evaluators is not None:
        doc["$evaluators"] = evaluators
    return doc


def nested(depth: int, wrap: Any) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = wrap(node)
    return node


WRAPS = {
    "and": lambda x: {"and": [x]},
    "if": lambda x: {"if": [x, "a", None]},
    "array": lambda x: [x],
    "not": lambda x: {"!": x},
    "map": lambda x: {"map": [[1], x]},
    "var": lambda x: {"var": x},
}


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@pytest.mark.parametrize("wrap", sorted(WRAPS))
@pytest.mark.parametrize("depth", [65, 500, 5_000, 100_000])
def test_deep_rules_are_refused_fast_with_the_flag_in_the_path(wrap: str, depth: int) -> None:
    rule = {"if": [nested(depth, WRAPS[wrap]), "b", None]}
    problems, took = timed(lambda: validate_document(flag_doc(rule)))
    assert problems and took < 2.0
    assert all(p.path.startswith("flags.deep-flag.targeting") for p in problems), problems[:3]
    with pytest.raises(InvalidDocument):
        compile_document(flag_doc(rule))
    # The same rule as an evaluator is named by its evaluator path.
    problems = validate_document(flag_doc({"$ref": "deep"}, evaluators={"deep": rule}))
    assert problems and all(p.path.startswith(("$evaluators.deep", "flags.deep-flag"))
                            for p in problems), problems[:3]


def test_deep_json_text_is_refused_not_raised() -> None:
    text = '{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": ' + \
           '{"and": [' * 100_000 + "1" + "]}" * 100_000 + "}}}"
    problems, took = timed(lambda: validate_document(text))
    assert problems and took < 2.0
    with pytest.raises(InvalidDocument):
        load_document(text)


def test_deep_object_variants_are_refused_at_load_not_when_served() -> None:
    """orjson writes at most 255 levels: a deeper variant would fail every response."""
    ok = nested(60, lambda x: {"k": x})
    fs = compile_document(flag_doc(variants={"a": ok, "b": {}}))
    orjson.dumps(evaluate(fs, "deep-flag", {}).to_ofrep())
    orjson.dumps(fs.to_document())
    deep_text = '{"flags": {"f": {"state": "ENABLED", "defaultVariant": "a", "variants": {"a": ' + \
                '{"k": ' * 300 + "1" + "}" * 300 + "}}}}"
    doc = load_document(deep_text)  # orjson reads 1024 levels
    problems = validate_document(doc)
    assert [p.path for p in problems] == ["flags.f.variants.a"], problems


def test_huge_rules_are_refused_fast() -> None:
    wide = {"or": [{"==": [{"var": "x"}, i]} for i in range(60_000)]}
    problems, took = timed(lambda: validate_document(flag_doc({"if": [wide, "b", None]})))
    assert took < 10.0
    assert problems and all(p.path.startswith("flags.deep-flag") for p in problems)
    # A large but legal rule (a long allow-list) compiles and evaluates quickly.
    allow = {"in": [{"var": "user"}, [f"user-{i}" for i in range(50_000)]]}
    fs, took = timed(lambda: compile_document(flag_doc({"if": [allow, "b", None]})))
    assert took < 5.0
    r, took = timed(lambda: evaluate(fs, "deep-flag", {"user": "user-49999"}))
    assert r.variant == "b" and took < 0.5


def test_self_feeding_reduce_is_bounded_at_run_time() -> None:
    """An accumulator that doubles per element (cat or merge of itself) grows 2^n: a context
    array of 40 items must not cost a terabyte. It fails (GENERAL) instead, quickly."""
    for mapper in ({"cat": [{"var": "accumulator"}, {"var": "accumulator"}]},
                   {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}):
        init = "x" if "cat" in mapper else [1]
        rule = {"if": [{"==": [{"reduce": [{"var": "arr"}, mapper, init]}, "y"]}, "b", None]}
        fs = compile_document(flag_doc(rule))
        small = evaluate(fs, "deep-flag", {"arr": list(range(5))})
        assert small.variant == "a"  # legal sizes still work
        r, took = timed(lambda fs=fs: evaluate(fs, "deep-flag", {"arr": list(range(60))}))
        assert took < 2.0
        assert r.error_code is ErrorCode.GENERAL, r


def test_self_feeding_reduce_over_a_literal_is_refused_at_load() -> None:
    mapper = {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}
    rule = {"if": [{"==": [{"reduce": [list(range(60)), mapper, "x"]}, "y"]}, "b", None]}
    problems, took = timed(lambda: validate_document(flag_doc(rule)))
    assert took < 2.0
    assert problems and all(p.path.startswith("flags.deep-flag.targeting") for p in problems)


def test_cyclic_and_deep_ref_chains_are_problems_with_paths() -> None:
    chain = {f"e{i}": {"$ref": f"e{i + 1}"} for i in range(2_000)}
    chain["e2000"] = {"$ref": "e0"}
    problems, took = timed(lambda: validate_document(flag_doc({"$ref": "e0"}, evaluators=chain)))
    assert problems and took < 5.0
    assert all(p.path for p in problems)
    long_chain = {f"e{i}": {"$ref": f"e{i + 1}"} for i in range(2_000)}
    long_chain["e2000"] = {"==": [{"var": "x"}, 1]}
    problems, took = timed(lambda: validate_document(flag_doc({"if": [{"$ref": "e0"}, "b", None]},
                                                              evaluators=long_chain)))
    assert took < 5.0
    assert all(p.path for p in problems)


LIT = list(range(1000))
# Three nested maps over a 1,000-item literal: a few thousand objects (the inner results are
# shared), but a billion elements once turned into a string.
SHARED = {"map": [LIT, {"map": [LIT, {"map": [LIT, {"var": ""}]}]}]}


@pytest.mark.parametrize("rule", [
    {"if": [{"==": [SHARED, "y"]}, "b", None]},
    SHARED,
    {"cat": [SHARED]},
    {"cat": [SHARED, "x"]},
    {"if": [{"in": ["x", {"cat": [SHARED]}]}, "b", None]},
], ids=["==", "bare", "cat", "cat2", "in"])
def test_shared_structures_too_large_to_stringify_are_refused_at_load(rule: Any) -> None:
    problems, took = timed(lambda: validate_document(flag_doc(rule)))
    assert took < 10.0
    assert problems and all(p.path.startswith("flags.deep-flag.targeting") for p in problems)
    with pytest.raises(InvalidDocument):
        compile_document(flag_doc(rule))


def test_shared_structures_built_from_the_context_fail_fast_at_run_time() -> None:
    inner = {"map": [LIT, {"map": [LIT, {"var": ""}]}]}
    rule = {"if": [{"==": [{"cat": [{"map": [{"var": "arr"}, inner]}, "x"]}, "y"]}, "b", None]}
    fs = compile_document(flag_doc(rule))
    assert evaluate(fs, "deep-flag", {"arr": [1]}).variant == "a"  # a million: fine
    r, took = timed(lambda: evaluate(fs, "deep-flag", {"arr": LIT}))
    assert took < 10.0 and r.error_code is ErrorCode.GENERAL, r


def test_nested_iterations_that_cannot_be_folded_are_bounded() -> None:
    """`missing` reads the request, so nothing here is folded at load: each evaluation would
    run a billion iterations."""
    impure = {"map": [LIT, {"map": [LIT, {"map": [LIT, {"missing": ["a"]}]}]}]}
    fs = compile_document(flag_doc({"if": [{"some": [impure, True]}, "b", None]}))
    r, took = timed(lambda: evaluate(fs, "deep-flag", {}))
    assert took < 5.0 and r.error_code is ErrorCode.GENERAL, r
    small = {"map": [LIT[:100], {"map": [LIT[:100], {"missing": ["a"]}]}]}  # 10,000: fine
    fs = compile_document(flag_doc({"if": [{"some": [small, True]}, "b", None]}))
    assert evaluate(fs, "deep-flag", {}).variant == "b"
