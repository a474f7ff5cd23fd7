"""Golden tests for conformance bugs found by tests/conformance (flagd-core 4.0.1 answers,
checked with the reference; no node needed here)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate


def _variant(targeting: Any, context: dict[str, Any]) -> str | None:
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2},
                           "defaultVariant": "b", "targeting": targeting}}}
    return evaluate(compile_document(doc), "f", context).variant


IN_UNDER_COMPARISON = [
    # json-logic-engine compiles `in` as `(haystack || []).includes(needle)`: the needle's var
    # is the last write to the `prev` register the enclosing comparison checks against.
    ({"if": [{"!=": [{"var": "t"}, {"in": [{"var": "u"}, {"var": "s"}]}]}, "a", "b"]},
     {"t": "", "u": "u1"}, "b"),  # compareCheck(false, "u1") throws: plain JS "" != false
    ({"if": [{"==": [{"var": "t"}, {"in": [{"var": "u"}, {"var": "s"}]}]}, "a", "b"]},
     {"s": "x"}, "a"),  # prev is the needle's null: null == false holds
    ({"if": [{"==": [{"var": "t"}, {"in": [{"var": "u"}, {"var": "s"}]}]}, "a", "b"]},
     {"u": "x"}, "b"),
]


@pytest.mark.parametrize(("targeting", "context", "variant"), IN_UNDER_COMPARISON)
def test_in_evaluates_its_haystack_first(targeting: Any, context: dict[str, Any],
                                         variant: str) -> None:
    assert _variant(targeting, context) == variant


DYNAMIC_VAR_KEY = [
    # {"var": [KEY_EXPR, default]}: the key's value goes to var's method as the key itself
    # (an array key reads as its JS string: ["x"] -> "x"); only a lone key expression may
    # evaluate to a [key, default] pair
    ({"var": [{"var": "u"}, "b"]}, {"u": ["x"], "x": "a"}, "a"),
    ({"var": [{"var": "u"}, "b"]}, {"u": ["zz", "a"]}, "b"),
    ({"var": [{"var": "u"}]}, {"u": ["zz", "a"]}, "a"),
    ({"var": {"var": "u"}}, {"u": ["zz", "a"]}, "a"),
]


@pytest.mark.parametrize(("targeting", "context", "variant"), DYNAMIC_VAR_KEY)
def test_var_with_a_computed_key_and_a_default(targeting: Any, context: dict[str, Any],
                                               variant: str) -> None:
    assert _variant(targeting, context) == variant


UNSAFE_INTEGERS = [
    # JSON integers past 2^53 are doubles in JS: arithmetic rounds them first
    # (9007199254740993 -> 9007199254740992, which is 2 mod 3, not 0)
    ({"if": [{"==": [0, {"%": [{"var": "n"}, 3]}]}, "a", "b"]}, {"n": 9007199254740993}, "b"),
    ({"if": [{"==": [0, {"%": [{"var": "n"}, 3]}]}, "a"]}, {"n": 9007199254740993}, "b"),
    ({"if": [{"==": [{"var": "m"}, {"+": [{"var": "n"}, 1]}]}, "a", "b"]},
     {"n": 9007199254740993, "m": 9007199254740994}, "b"),
    ({"if": [{"==": [{"var": "m"}, {"-": [{"var": "n"}, 1]}]}, "a", "b"]},
     {"n": 9007199254740993, "m": 9007199254740992}, "b"),
    ({"if": [{"==": [1, {"%": [{"var": "n"}, 2]}]}, "a", "b"]}, {"n": 12345678901234567891}, "b"),
    ({"if": [{"<": [{"/": [{"var": "n"}, 3]}, 3002399751580331]}, "a", "b"]},
     {"n": 9007199254740993}, "a"),
]


@pytest.mark.parametrize(("targeting", "context", "variant"), UNSAFE_INTEGERS)
def test_arithmetic_on_integers_past_2_53_is_double_arithmetic(
        targeting: Any, context: dict[str, Any], variant: str) -> None:
    assert _variant(targeting, context) == variant


def test_interpreted_not_evaluates_all_its_arguments() -> None:
    # under a 2-argument if the reference's interpreter evaluates every argument of ! / !!
    # (84 has no .includes: GENERAL); compiled code (3-argument if) only evaluates the first
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2},
                           "defaultVariant": "b", "targeting": None}}}
    ctx = {"n": 84, "v": True}
    for op in ("!", "!!"):
        cond = {op: [{"var": "v"}, {"in": ["1", {"var": "n"}]}]}
        doc["flags"]["f"]["targeting"] = {"if": [cond, "a"]}
        assert evaluate(compile_document(doc), "f", ctx).error_code is not None
        doc["flags"]["f"]["targeting"] = {"if": [cond, "a", "b"]}
        assert evaluate(compile_document(doc), "f", ctx).variant == ("b" if op == "!" else "a")


@pytest.mark.parametrize(("need", "variant"), [("12abc", "a"), ({}, "a"), (2, "a"), ("1", "b")])
def test_interpreted_missing_some_asks_found_at_least_need(need: Any, variant: str) -> None:
    # under a 2-argument ?: the interpreter answers `found >= need ? [] : missing`, so a need
    # that is not a number (NaN) returns the missing keys (compiled: `found < need`, [] then)
    targeting = {"?:": [{"missing_some": [{"var": "need"}, ["email", "tier"]]}, "a"]}
    assert _variant(targeting, {"need": need, "email": "x@y"}) == variant


def test_iterator_over_a_literal_folds_with_a_var_default_in_its_body() -> None:
    # the reference counts any var inside an iterator body as deterministic (its default
    # reads the element too), so it folds `all` over `true` with its interpreter: no items,
    # true; compiled code would have thrown (true has no .every)
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"true": 1, "false": 0},
                           "defaultVariant": "false",
                           "targeting": {"all": [True, {"var": ["o.p", {"var": "a.x"}]}]}}}}
    assert evaluate(compile_document(doc), "f", {}).variant == "true"
