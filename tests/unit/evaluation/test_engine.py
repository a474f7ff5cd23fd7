"""evaluate / evaluate_all / explain: every reason and error path, falsy values served as
values, metadata merge, $flagd properties."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate, evaluate_all, explain
from proxy.model import ErrorCode, Reason

BOOL = {"on": True, "off": False}


def fs_of(flags: dict[str, Any], **extra: Any) -> Any:
    return compile_document({"flags": flags, **extra})


def one(targeting: Any = None, variants: Any = None, default: Any = "off", **kw: Any) -> Any:
    f: dict[str, Any] = {"state": "ENABLED", "variants": variants or BOOL, "defaultVariant": default, **kw}
    if targeting is not None:
        f["targeting"] = targeting
    return fs_of({"f": f})


def test_static() -> None:
    r = evaluate(one(), "f", {})
    assert (r.reason, r.variant, r.value, r.error_code) == (Reason.STATIC, "off", False, None)
    assert r.to_ofrep() == {"key": "f", "reason": "STATIC", "variant": "off", "value": False, "metadata": {}}


def test_disabled_has_no_value() -> None:
    r = evaluate(fs_of({"f": {"state": "DISABLED", "variants": BOOL, "defaultVariant": "on"}}), "f", {})
    assert (r.reason, r.variant, r.has_value) == (Reason.DISABLED, None, False)
    assert "value" not in r.to_ofrep() and r.to_ofrep()["variant"] is None


def test_targeting_match_even_when_equal_to_default() -> None:
    r = evaluate(one({"if": [{"var": "beta"}, "off", "on"]}), "f", {"beta": True})
    assert (r.reason, r.variant, r.value) == (Reason.TARGETING_MATCH, "off", False)


def test_null_gives_default() -> None:
    r = evaluate(one({"if": [{"var": "beta"}, "on", None]}), "f", {})
    assert (r.reason, r.variant, r.value) == (Reason.DEFAULT, "off", False)


def test_no_default_variant() -> None:
    fs = one({"if": [{"var": "beta"}, "on", None]}, default=None)
    r = evaluate(fs, "f", {})
    assert (r.reason, r.variant, r.has_value) == (Reason.DEFAULT, None, False)
    assert "value" not in r.to_ofrep()
    static = evaluate(one(default=None), "f", {})
    assert (static.reason, static.variant) == (Reason.DEFAULT, None)
    assert evaluate(fs, "f", {"beta": 1}).variant == "on"


def test_booleans_map_to_true_false_variants() -> None:
    fs = one({"==": [{"var": "tier"}, "gold"]}, variants={"true": "yes", "false": "no"}, default="false")
    assert (evaluate(fs, "f", {"tier": "gold"}).variant, evaluate(fs, "f", {}).variant) == ("true", "false")
    assert evaluate(fs, "f", {}).reason is Reason.TARGETING_MATCH


def test_numeric_results_name_variants_as_js_strings() -> None:
    fs = one({"+": [{"var": "n"}, 1]}, variants={"2": "two", "2.5": "two and a half"}, default="2")
    assert evaluate(fs, "f", {"n": 1.0}).variant == "2"
    assert evaluate(fs, "f", {"n": 1.5}).variant == "2.5"


def test_unknown_variant_is_general_error() -> None:
    r = evaluate(one({"var": "pick"}), "f", {"pick": "maybe"})
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
    assert "maybe" in (r.error_details or "")
    assert set(r.to_ofrep()) == {"key", "errorCode", "errorDetails"}


@pytest.mark.parametrize(
    ("targeting", "ctx"),
    [
        ({"/": [10, {"var": "d"}]}, {"d": 0}),
        ({"+": [{"var": "o"}, 1]}, {"o": {"a": 1}}),
        ({"substr": [{"var": "n"}, 1]}, {"n": 5}),
        ({"map": [{"var": "s"}, 1]}, {"s": "abc"}),
        ({"reduce": [{"var": "e"}, {"var": "current"}]}, {"e": []}),
        ({"in": ["x", {"var": "o"}]}, {"o": {"x": 1}}),
    ],
)
def test_runtime_errors_are_general_not_raised(targeting: Any, ctx: dict[str, Any]) -> None:
    fs = one(targeting)
    r = evaluate(fs, "f", ctx)
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
    assert r.error_details
    (bulk,) = evaluate_all(fs, ctx)
    assert bulk.error_code is ErrorCode.GENERAL


def test_flag_not_found() -> None:
    r = evaluate(one(), "nope", {})
    assert (r.error_code, r.reason, r.key) == (ErrorCode.FLAG_NOT_FOUND, Reason.ERROR, "nope")


@pytest.mark.parametrize("tk", [5, True, {"id": 1}, ["a"], 1.5])
def test_non_string_targeting_key_is_invalid_context(tk: Any) -> None:
    fs = fs_of({"s": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"},
                "t": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on", "targeting": {"fractional": [["on", 1]]}}})
    for key in ("s", "t"):
        assert evaluate(fs, key, {"targetingKey": tk}).error_code is ErrorCode.INVALID_CONTEXT
    assert [r.error_code for r in evaluate_all(fs, {"targetingKey": tk})] == [ErrorCode.INVALID_CONTEXT] * 2


def test_context_may_be_empty_or_none_and_targeting_key_optional() -> None:
    fs = one({"if": [{"var": "targetingKey"}, "on", "off"]})
    assert evaluate(fs, "f", None).variant == "off"
    assert evaluate(fs, "f", {}).variant == "off"
    assert evaluate(fs, "f", {"targetingKey": "u1"}).variant == "on"
    assert evaluate(fs, "f", "not a mapping").error_code is ErrorCode.INVALID_CONTEXT  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variants", "name", "value"),
    [
        ({"no": False, "yes": True}, "no", False),
        ({"zero": 0, "one": 1}, "zero", 0),
        ({"empty": "", "full": "x"}, "empty", ""),
        ({"none": {}, "some": {"a": 1}}, "none", {}),
        ({"zero": 0.0, "half": 0.5}, "zero", 0.0),
    ],
)
def test_falsy_values_are_served(variants: dict[str, Any], name: str, value: Any) -> None:
    static = evaluate(one(variants=variants, default=name), "f", {})
    targeted = evaluate(one({"if": [{"var": "x"}, "nope", name]}, variants=variants, default=None), "f", {})
    for r in (static, targeted):
        assert r.variant == name and r.value == value and type(r.value) is type(value) and r.has_value
        assert r.to_ofrep()["value"] == value


def test_metadata_merge() -> None:
    fs = fs_of({"f": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on", "metadata": {"owner": "web", "tier": 1}},
                "g": {"state": "DISABLED", "variants": BOOL, "defaultVariant": "on"}},
               metadata={"owner": "platform", "flagSetId": "demo"})
    assert evaluate(fs, "f", {}).metadata == {"owner": "web", "flagSetId": "demo", "tier": 1}
    assert evaluate(fs, "g", {}).metadata == {"owner": "platform", "flagSetId": "demo"}
    err = evaluate(fs_of({"h": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on", "targeting": {"var": "v"}}},
                         metadata={"flagSetId": "demo"}), "h", {"v": "zzz"})
    assert err.error_code is ErrorCode.GENERAL and err.metadata == {"flagSetId": "demo"}


def test_flagd_properties() -> None:
    fs = fs_of({
        "alpha": {"state": "ENABLED", "variants": {"alpha": 1, "other": 2}, "defaultVariant": "other", "targeting": {"var": "$flagd.flagKey"}},
        "clock": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off",
                  "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, {"var": "after"}]}, "on", "off"]}},
    })
    assert evaluate(fs, "alpha", {}).variant == "alpha"
    now = int(time.time())
    assert evaluate(fs, "clock", {"after": now - 100}).variant == "on"
    assert evaluate(fs, "clock", {"after": now + 100}).variant == "off"
    # a caller-supplied $flagd is replaced, as in flagd
    assert evaluate(fs, "alpha", {"$flagd": {"flagKey": "other"}}).variant == "alpha"
    assert fs.flags["clock"].uses_timestamp and not fs.flags["alpha"].uses_timestamp


def test_context_is_not_modified() -> None:
    fs = one({"if": [{"var": "$flagd.flagKey"}, "on"]})
    ctx = {"targetingKey": "u"}
    evaluate(fs, "f", ctx)
    evaluate_all(fs, ctx)
    assert ctx == {"targetingKey": "u"}


def test_evaluate_all_in_document_order_with_per_flag_keys() -> None:
    fs = fs_of({
        "b": {"state": "ENABLED", "variants": {"b": 1, "x": 0}, "defaultVariant": "x", "targeting": {"var": "$flagd.flagKey"}},
        "a": {"state": "DISABLED", "variants": BOOL, "defaultVariant": "on"},
        "c": {"state": "ENABLED", "variants": {"c": 1, "x": 0}, "defaultVariant": "x", "targeting": {"var": "$flagd.flagKey"}},
        "d": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"},
    })
    results = evaluate_all(fs, {"targetingKey": "u"})
    assert [(r.key, r.reason, r.variant) for r in results] == [
        ("b", Reason.TARGETING_MATCH, "b"), ("a", Reason.DISABLED, None), ("c", Reason.TARGETING_MATCH, "c"), ("d", Reason.STATIC, "on"),
    ]
    assert [evaluate(fs, k, {"targetingKey": "u"}) for k in "bacd"] == results


def test_explain_lists_the_rule_path() -> None:
    fs = fs_of(
        {"f": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off",
               "targeting": {"if": [{"$ref": "staff"}, "on", {"fractional": [["on", 37], ["off", 63]]}]}}},
        **{"$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.example"]}}},
    )
    result, lines = explain(fs, "f", {"targetingKey": "user-1", "email": "a@b.c"})
    assert result == evaluate(fs, "f", {"targetingKey": "user-1", "email": "a@b.c"})
    assert lines[0] == "$ref staff"
    assert lines[1] == "if[0] condition -> false"
    frac = next(line for line in lines if line.startswith("fractional bucket "))
    assert "/100 hash=" in frac and frac.endswith(f'-> "{result.variant}"')
    assert lines[-1].startswith("targeting returned")
    staff, staff_lines = explain(fs, "f", {"targetingKey": "u", "email": "x@corp.example"})
    assert staff.variant == "on" and "if[0] condition -> true" in staff_lines


def test_explain_other_paths() -> None:
    fs = fs_of({"s": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"},
                "d": {"state": "DISABLED", "variants": BOOL, "defaultVariant": "on"},
                "e": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on", "targeting": {"/": [1, {"var": "z"}]}}})
    assert "no targeting" in explain(fs, "s", {})[1][0]
    assert "DISABLED" in explain(fs, "d", {})[1][0]
    res, lines = explain(fs, "e", {"z": 0})
    assert res.error_code is ErrorCode.GENERAL and lines[-1].startswith("error:")
    assert explain(fs, "zz", {})[0].error_code is ErrorCode.FLAG_NOT_FOUND


def test_flags_built_by_hand_still_evaluate() -> None:
    from proxy.model import Flag, FlagSet, FlagState, VariantType

    def mk(**kw: Any) -> Flag:
        base = dict(key="h", state=FlagState.ENABLED, variants=BOOL, variant_type=VariantType.BOOLEAN,
                    default_variant="on", metadata={"m": 1}, raw={})
        base.update(kw)
        return Flag(**base)  # type: ignore[arg-type]

    fs = FlagSet(flags={"h": mk()})
    r = evaluate(fs, "h", {})
    assert (r.reason, r.variant, r.value, r.metadata) == (Reason.STATIC, "on", True, {"m": 1})
    fs = FlagSet(flags={"h": mk(state=FlagState.DISABLED, rule=lambda d: "off")})
    assert evaluate(fs, "h", {}).reason is Reason.DISABLED
    fs = FlagSet(flags={"h": mk(rule=lambda d: "off")})
    assert (evaluate(fs, "h", {}).reason, evaluate(fs, "h", {}).variant) == (Reason.TARGETING_MATCH, "off")
    assert [r.variant for r in evaluate_all(fs, {})] == ["off"]
