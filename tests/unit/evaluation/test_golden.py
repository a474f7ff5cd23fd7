"""One golden test per reference behaviour named in DESIGN §2 (checked against flagd's JS
evaluator, @openfeature/flagd-core 4.0.1 with json-logic-engine 5.0.7, unless DESIGN names a
divergence)."""

from __future__ import annotations

from typing import Any

import mmh3
import pytest

from proxy.evaluation.documents import compile_document, validate_document
from proxy.evaluation.engine import evaluate
from proxy.model import ErrorCode, Reason

BOOL = {"on": True, "off": False}


def run(targeting: Any, ctx: dict[str, Any] | None = None, variants: Any = None, default: Any = "off", key: str = "f") -> Any:
    fs = compile_document({"flags": {key: {"state": "ENABLED", "variants": variants or BOOL, "defaultVariant": default, "targeting": targeting}}})
    return evaluate(fs, key, ctx or {})


def cond(logic: Any, ctx: dict[str, Any] | None = None) -> str | None:
    """Which branch an `if` takes on `logic`: on, off."""
    return run({"if": [logic, "on", "off"]}, ctx).variant


@pytest.mark.parametrize(("value", "branch"), [({}, "off"), ([], "off"), ("0", "on"), ("", "off"), (0, "off"), ({"a": 1}, "on"), ([0], "on")])
def test_truthiness_empty_object_and_array_are_falsy_string_zero_truthy(value: Any, branch: str) -> None:
    assert cond({"var": "v"}, {"v": value}) == branch
    if not (isinstance(value, dict) and value):  # a non-empty object literal is an operation
        assert cond(value) == branch


def test_null_equals_zero() -> None:
    assert cond({"==": [None, 0]}) == "on"


def test_missing_var_equals_false() -> None:
    assert cond({"==": [{"var": "nope"}, False]}) == "on"


def test_constant_division_by_zero_is_a_load_time_problem() -> None:
    problems = validate_document({"flags": {"f": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off",
                                                  "targeting": {"if": [{">": [{"/": [{"var": "n"}, 0]}, 1]}, "on", "off"]}}}})
    assert [(p.path, p.message) for p in problems] == [("flags.f.targeting.if[0].>[0]./[1]", "division by zero")]


def test_division_by_zero_below_a_short_if_fails_at_run_time() -> None:
    # the reference interprets an `if` with fewer than 3 arguments: no load error, GENERAL
    r = run({"if": [{">": [{"/": [{"var": "n"}, 0]}, 1]}, "on"]}, {"n": 1})
    assert r.error_code is ErrorCode.GENERAL


def test_mixed_type_comparison_follows_plain_js() -> None:
    # the reference throws on this one; DESIGN §2 says: answer as JavaScript does
    assert cond({"!=": [True, "true"]}) == "on"
    assert cond({"==": [{"var": "flag"}, "true"]}, {"flag": True}) == "off"


@pytest.mark.parametrize(("version", "target"), [("1.2", "1.2.0"), ("2", "2.0.0"), ("v1.2.3", "1.2.3"), ("V3", "3.0.0")])
def test_sem_ver_partial_versions_and_v_prefix(version: str, target: str) -> None:
    assert cond({"sem_ver": [{"var": "v"}, "=", target]}, {"v": version}) == "on"


def test_sem_ver_caret_and_tilde() -> None:
    assert cond({"sem_ver": [{"var": "v"}, "^", "1.0.0"]}, {"v": "1.9.9"}) == "on"
    assert cond({"sem_ver": [{"var": "v"}, "~", "1.2.0"]}, {"v": "1.3.0"}) == "off"


@pytest.mark.parametrize(
    "logic",
    [
        {"sem_ver": [{"var": "v"}, ">=", "1.0.0"]},  # v is not a version
        {"starts_with": [{"var": "n"}, "1"]},  # not a string
        {"ends_with": [{"var": "n"}, "1"]},
        {"fractional": [{"var": "nope"}, ["on", 1], ["off", 1]]},  # no targetingKey to fall back on
    ],
)
def test_custom_operators_return_null_on_bad_input(logic: Any) -> None:
    assert run({"if": [{"===": [logic, None]}, "on", "off"]}, {"v": "banana", "n": 11}).variant == "on"


def test_custom_operator_null_result_gives_default() -> None:
    r = run({"fractional": [["on", 1], ["off", 1]]}, {})
    assert (r.reason, r.variant) == (Reason.DEFAULT, "off")


def test_fractional_weight_rules() -> None:
    ctxs = [{"targetingKey": f"u{i}"} for i in range(100)]
    default_one = [run({"fractional": [["on"], ["off"]]}, c).variant for c in ctxs]
    explicit = [run({"fractional": [["on", 1], ["off", 1]]}, c).variant for c in ctxs]
    assert default_one == explicit
    assert {run({"fractional": [["on", -10], ["off", 5]]}, c).variant for c in ctxs} == {"off"}
    assert run({"fractional": [["on", {"var": "w"}], ["off", 1]]}, {"targetingKey": "u", "w": 50.5}).reason is Reason.DEFAULT
    assert run({"fractional": [["on", {"var": "w"}], ["off", 1]]}, {"targetingKey": "u", "w": True}).reason is Reason.DEFAULT
    assert run({"fractional": [["on", {"var": "w"}], ["off", 0]]}, {"targetingKey": "u", "w": 50.0}).variant == "on"


def test_fractional_hashes_utf8_like_go() -> None:
    # JS hashes UTF-16 code units (a documented divergence); we hash the UTF-8 bytes
    key = "f" + "josé"
    h = mmh3.hash(key.encode("utf-8"), 0, signed=False)
    expected = "on" if (h * 2) >> 32 < 1 else "off"
    assert run({"fractional": [["on", 1], ["off", 1]]}, {"targetingKey": "josé"}).variant == expected


def test_fractional_non_string_bucket_by_uses_flag_key_and_targeting_key() -> None:
    a = [run({"fractional": [{"var": "n"}, ["on", 1], ["off", 1]]}, {"targetingKey": f"u{i}", "n": 5}).variant for i in range(40)]
    b = [run({"fractional": [["on", 1], ["off", 1]]}, {"targetingKey": f"u{i}"}).variant for i in range(40)]
    assert a == b


def test_ref_resolved_recursively() -> None:
    fs = compile_document({
        "$evaluators": {"outer": {"or": [{"$ref": "inner"}, False]}, "inner": {"==": [{"var": "plan"}, "pro"]}},
        "flags": {"f": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off", "targeting": {"if": [{"$ref": "outer"}, "on", "off"]}}},
    })
    assert evaluate(fs, "f", {"plan": "pro"}).variant == "on"
    assert evaluate(fs, "f", {"plan": "free"}).variant == "off"


def test_targeting_match_even_if_default() -> None:
    assert run({"if": [True, "off"]}).reason is Reason.TARGETING_MATCH
    assert run({"if": [{"var": "x"}, "off", "off"]}).reason is Reason.TARGETING_MATCH


def test_true_false_results_map_to_variant_names() -> None:
    assert run({"==": [1, {"var": "x"}]}, {"x": 1}, variants={"true": "y", "false": "n"}, default="false").variant == "true"


def test_unknown_variant_from_targeting_is_general() -> None:
    assert run({"var": "v"}, {"v": "nope"}).error_code is ErrorCode.GENERAL


def test_empty_targeting_is_static() -> None:
    assert run({}).reason is Reason.STATIC
