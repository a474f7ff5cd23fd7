"""fractional: reference buckets (checked against flagd-core 4.0.1 for ASCII keys), defaults,
null on bad input, load-time validation of literal weights."""

from __future__ import annotations

from typing import Any

import mmh3
import pytest

from proxy.evaluation.documents import compile_document, validate_document
from proxy.evaluation.engine import evaluate
from proxy.evaluation.jsonlogic.bucketing import MAX_TOTAL_WEIGHT, bucket_of
from proxy.model import Reason

BOOL = {"on": True, "off": False}
ABC = {"a": "a", "b": "b", "c": "c"}


def _flag_set(targeting: Any, variants: dict[str, Any] | None = None, key: str = "f") -> Any:
    variants = variants or ABC
    default = "c" if "c" in variants else "off"
    return compile_document(
        {"flags": {key: {"state": "ENABLED", "variants": variants, "defaultVariant": default, "targeting": targeting}}}
    )


def test_reference_buckets_by_flag_key_and_targeting_key() -> None:
    # flagd-core 4.0.1 gives exactly these for user-0..7
    fs = _flag_set({"fractional": [["on", 25], ["off", 75]]}, BOOL, key="new-checkout")
    got = [evaluate(fs, "new-checkout", {"targetingKey": f"user-{i}"}).variant for i in range(8)]
    assert got == ["off", "off", "on", "off", "off", "off", "off", "off"]


def test_reference_buckets_by_expression() -> None:
    fs = _flag_set({"fractional": [{"var": "email"}, ["c", 34], ["a", 33], ["b", 33]]})
    got = [evaluate(fs, "f", {"email": f"person{i}@example.com"}).variant for i in range(8)]
    assert got == ["b", "a", "b", "a", "c", "c", "b", "c"]


def test_bucket_formula() -> None:
    h, bucket = bucket_of("fuser-1", 100)
    assert h == mmh3.hash(b"fuser-1", 0, signed=False)
    assert bucket == (h * 100) >> 32


def test_default_weight_is_one() -> None:
    explicit = _flag_set({"fractional": [["a", 1], ["b", 1], ["c", 1]]})
    implicit = _flag_set({"fractional": [["a"], ["b"], ["c"]]})
    for i in range(200):
        ctx = {"targetingKey": f"u{i}"}
        assert evaluate(explicit, "f", ctx).variant == evaluate(implicit, "f", ctx).variant


def test_zero_and_negative_weights_never_win() -> None:
    fs = _flag_set({"fractional": [["a", 0], ["b", -5], ["c", 3]]})
    assert {evaluate(fs, "f", {"targetingKey": f"u{i}"}).variant for i in range(300)} == {"c"}


@pytest.mark.parametrize("ctx", [{}, {"targetingKey": ""}])
def test_missing_or_empty_targeting_key_gives_default(ctx: dict[str, Any]) -> None:
    r = evaluate(_flag_set({"fractional": [["a", 50], ["b", 50]]}), "f", ctx)
    assert (r.reason, r.variant) == (Reason.DEFAULT, "c")


def test_non_string_bucketing_expression_falls_back_to_flag_key_and_targeting_key() -> None:
    # DESIGN §2 (flagd's spec and Go evaluator); the JS evaluator returns null here
    by_expr = _flag_set({"fractional": [{"var": "missing"}, ["a", 50], ["b", 50]]})
    plain = _flag_set({"fractional": [["a", 50], ["b", 50]]})
    for i in range(50):
        ctx = {"targetingKey": f"u{i}"}
        assert evaluate(by_expr, "f", ctx).variant == evaluate(plain, "f", ctx).variant


@pytest.mark.parametrize("weight", [2.5, "3", None, True, [1]])
def test_computed_non_integer_weight_gives_null(weight: Any) -> None:
    fs = _flag_set({"fractional": [["a", {"var": "w"}], ["b", 50]]})
    r = evaluate(fs, "f", {"targetingKey": "u1", "w": weight})
    assert (r.reason, r.variant) == (Reason.DEFAULT, "c")


def test_computed_weights_are_allowed() -> None:
    fs = _flag_set({"fractional": [["a", {"var": "w"}], ["b", {"-": [100, {"var": "w"}]}]]})
    assert {evaluate(fs, "f", {"targetingKey": f"u{i}", "w": 100}).variant for i in range(50)} == {"a"}
    assert {evaluate(fs, "f", {"targetingKey": f"u{i}", "w": 0}).variant for i in range(50)} == {"b"}
    assert evaluate(fs, "f", {"targetingKey": "u1", "w": 10.0}).reason is Reason.TARGETING_MATCH


def test_computed_total_over_limit_gives_null() -> None:
    fs = _flag_set({"fractional": [["a", {"var": "w"}], ["b", {"var": "w"}]]})
    assert evaluate(fs, "f", {"targetingKey": "u", "w": MAX_TOTAL_WEIGHT}).reason is Reason.DEFAULT


def test_all_zero_weights_give_default() -> None:
    assert evaluate(_flag_set({"fractional": [["a", 0], ["b", 0]]}), "f", {"targetingKey": "u"}).reason is Reason.DEFAULT


def test_string_literal_bucketing_value_is_constant() -> None:
    fs = _flag_set({"fractional": ["everyone", ["a", 50], ["b", 50]]})
    assert len({evaluate(fs, "f", {"targetingKey": f"u{i}"}).variant for i in range(30)}) == 1


def test_numeric_variant_names_are_stringified() -> None:
    fs = compile_document({"flags": {"f": {"state": "ENABLED", "variants": {"1": 1, "2": 2}, "defaultVariant": "1",
                                          "targeting": {"fractional": [[2, 1]]}}}})
    assert evaluate(fs, "f", {"targetingKey": "u"}).variant == "2"


@pytest.mark.parametrize(
    ("targeting", "path", "message"),
    [
        ({"fractional": [["a", 50.5], ["b", 49.5]]}, "flags.f.targeting.fractional[0]", "weight must be an integer"),
        ({"if": [True, {"fractional": [{"var": "k"}, ["a", 1], ["b", True]]}]}, "flags.f.targeting.if[1].fractional[2]", "weight must be an integer"),
        ({"fractional": [["a", 2**31], ["b", 0]]}, "flags.f.targeting.fractional", "exceeds 2147483647"),
        ({"fractional": [["a", 1, 2]]}, "flags.f.targeting.fractional[0]", "a bucket is [variant]"),
        ({"fractional": [[]]}, "flags.f.targeting.fractional[0]", "a bucket is [variant]"),
        ({"fractional": [["a", 1], "b"]}, "flags.f.targeting.fractional[1]", "a bucket is [variant]"),
        ({"fractional": [5, ["a", 1]]}, "flags.f.targeting.fractional[0]", "bucketing expression"),
        ({"fractional": []}, "flags.f.targeting.fractional", "at least one bucket"),
        ({"fractional": [[{"var": "x"}, 1], [["x"], 1]]}, "flags.f.targeting.fractional[1]", "variant must be"),
    ],
)
def test_literal_bucket_validation(targeting: Any, path: str, message: str) -> None:
    problems = validate_document({"flags": {"f": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c", "targeting": targeting}}})
    assert any(p.path == path and message in p.message for p in problems), problems


def test_integral_float_weight_is_an_integer() -> None:
    assert validate_document({"flags": {"f": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
                                              "targeting": {"fractional": [["a", 50.0], ["b", 50]]}}}}) == []
