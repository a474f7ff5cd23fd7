"""Validation reports every problem at once, each with its JSON path; compile results."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from proxy.evaluation.documents import (
    compile_document,
    load_document,
    validate_document,
    validate_evaluators,
)
from proxy.evaluation.flags import compile_flag
from proxy.model import FlagState, InvalidDocument, Problem, Reason, VariantType

ROOT = Path(__file__).resolve().parents[3]
GOOD_FLAG = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}


def doc_with(flag: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"flags": {"new-checkout": flag}, **extra}


def flag(**changes: Any) -> dict[str, Any]:
    f = copy.deepcopy(GOOD_FLAG)
    f.update(changes)
    return {k: v for k, v in f.items() if v is not ...}


def problems_of(doc: Any) -> list[str]:
    return [str(p) for p in validate_document(doc)]


def test_demo_flags_are_valid() -> None:
    doc = load_document((ROOT / "config" / "flags.json").read_bytes())
    assert validate_document(doc) == []
    fs = compile_document(doc)
    assert len(fs.flags) >= 7 and fs.evaluators and fs.metadata


def test_bad_json() -> None:
    with pytest.raises(InvalidDocument) as exc:
        load_document(b'{"flags": {')
    assert exc.value.problems[0].message.startswith("invalid JSON")
    assert validate_document(b"{nope") and "invalid JSON" in validate_document(b"{nope")[0].message


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (doc_with(flag(state="ON")), "flags.new-checkout.state: unknown state 'ON' (use ENABLED or DISABLED)"),
        (doc_with(flag(state=...)), "flags.new-checkout.state: state is required (ENABLED or DISABLED)"),
        (doc_with(flag(variants={"a": 1, "b": "x"}, defaultVariant="a")), "flags.new-checkout.variants: variants must all have one type"),
        (doc_with(flag(variants={"a": [1]}, defaultVariant="a")), "flags.new-checkout.variants.a: variant values must be boolean, string, number or object"),
        (doc_with(flag(variants={})), "flags.new-checkout.variants: variants must be a non-empty object"),
        (doc_with(flag(defaultVariant="maybe")), "flags.new-checkout.defaultVariant: 'maybe' is not one of the variants (on, off)"),
        (doc_with(flag(targeting={"nope": [1]})), "flags.new-checkout.targeting: unknown operator 'nope'"),
        (doc_with(flag(targeting={"if": [{"==": [{"var": "x"}]}, "on"]})), "flags.new-checkout.targeting.if[0].==: == takes at least 2 operands, got 1"),
        (doc_with(flag(targeting={"if": [{"$ref": "ghost"}, "on"]})), "flags.new-checkout.targeting.if[0]: unknown $ref 'ghost'"),
        (doc_with(flag(targeting={"if": [True, {"fractional": [["on", 1], ["off", 2], ["on", 50.5]]}]})), "flags.new-checkout.targeting.if[1].fractional[2]: weight must be an integer"),
        (doc_with(flag(targeting={"fractional": [["on", 2**31 - 1], ["off", 1]]})), "flags.new-checkout.targeting.fractional: total weight 2147483648 exceeds 2147483647"),
        (doc_with(flag(metadata={"owner": {"team": "x"}})), "flags.new-checkout.metadata.owner: metadata values must be string, number or boolean"),
        (doc_with(flag(), metadata={"tags": ["a"]}), "metadata.tags: metadata values must be string, number or boolean"),
        (doc_with(flag(targeting={"/": [{"var": "x"}, 0]})), "flags.new-checkout.targeting./[1]: division by zero"),
        (doc_with(flag(targeting="on")), "flags.new-checkout.targeting: targeting must be a JsonLogic object"),
        (doc_with(flag(targeting={"if": [True, "maybe", "off"]})), "flags.new-checkout.targeting: targeting always returns 'maybe', which is not a variant"),
        ({"flags": []}, "flags: 'flags' is required and must be an object"),
        ([], "a flag document must be a JSON object"),
        ({"flags": {"x": "no"}}, "flags.x: a flag must be a JSON object"),
    ],
)
def test_each_problem_has_its_path(doc: Any, expected: str) -> None:
    got = problems_of(doc)
    assert any(p.startswith(expected) for p in got), got


def test_cyclic_ref() -> None:
    doc = doc_with(flag(targeting={"if": [{"$ref": "a"}, "on"]}), **{"$evaluators": {"a": {"$ref": "b"}, "b": {"or": [{"$ref": "a"}]}}})
    got = problems_of(doc)
    assert any("cyclic $ref: a -> b -> a" in p for p in got), got
    assert all(not p.startswith("flags.new-checkout.targeting.if[0]: unknown") for p in got)


def test_depth_and_size_limits() -> None:
    deep: Any = {"var": "x"}
    for _ in range(80):
        deep = {"!": [deep]}
    assert any("deeper than 64" in p for p in problems_of(doc_with(flag(targeting={"if": [deep, "on"]}))))
    big = {"or": [{"==": [{"var": "k"}, i]} for i in range(40_000)]}
    assert any("too large" in p for p in problems_of(doc_with(flag(targeting={"if": [big, "on"]}))))


def test_refs_cannot_blow_up_exponentially() -> None:
    evaluators = {f"e{i}": {"or": [{"$ref": f"e{i + 1}"}, {"$ref": f"e{i + 1}"}]} for i in range(40)}
    evaluators["e40"] = {"var": "x"}
    got = problems_of(doc_with(flag(targeting={"if": [{"$ref": "e0"}, "on"]}), **{"$evaluators": evaluators}))
    assert any("too large" in p for p in got)


def test_every_problem_is_reported_at_once() -> None:
    doc = {
        "flags": {
            "a": {"state": "ON", "variants": {"x": 1, "y": "s"}, "defaultVariant": "z"},
            "b": flag(targeting={"if": [{"nope": 1}, {"in": ["x"]}, {"$ref": "ghost"}]}),
        },
        "metadata": {"bad": None},
    }
    got = problems_of(doc)
    assert len(got) == 7, got
    with pytest.raises(InvalidDocument) as exc:
        compile_document(doc)
    assert [str(p) for p in exc.value.problems] == got


def test_validate_never_raises_on_odd_input() -> None:
    for doc in [None, 1, "x", b"\xff", {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"var": {"var": {"var": 1}}}}}},
                {"flags": {1: 2}}, {"flags": {"f": flag(targeting={"if": [[[[{}]]]]})}}, {"$evaluators": [], "flags": {}}]:
        result = validate_document(doc)
        assert isinstance(result, list) and all(isinstance(p, Problem) for p in result)


def test_validate_evaluators() -> None:
    assert validate_evaluators({"ok": {"var": "x"}}) == []
    got = [str(p) for p in validate_evaluators({"bad": {"in": [1]}, "ref": {"$ref": "nope"}})]
    assert got == ["$evaluators.bad.in: in takes 2 arguments, got 1", "$evaluators.ref: unknown $ref 'nope' (no such entry in $evaluators)"]
    assert [str(p) for p in validate_evaluators([])] == ["$evaluators: $evaluators must be an object"]


def test_compile_flag() -> None:
    evaluators = {"staff": {"ends_with": [{"var": "email"}, "@corp.example"]}}
    f = compile_flag("new-checkout", flag(targeting={"if": [{"$ref": "staff"}, "on"]}, metadata={"team": "web"}), evaluators, {"team": "core", "env": "prod"})
    assert f.key == "new-checkout" and f.state is FlagState.ENABLED and f.variant_type is VariantType.BOOLEAN
    assert f.refs == frozenset({"staff"}) and f.rule is not None and f.static_result is None
    assert f.metadata == {"team": "web", "env": "prod"}  # flag metadata wins over set metadata
    with pytest.raises(InvalidDocument) as exc:
        compile_flag("x", flag(state="NOPE", targeting={"$ref": "ghost"}), evaluators, {})
    assert sorted(p.path for p in exc.value.problems) == ["flags.x.state", "flags.x.targeting"]


def test_static_and_disabled_flags_are_precomputed() -> None:
    fs = compile_document({"flags": {
        "s": GOOD_FLAG,
        "d": flag(state="DISABLED", targeting={"if": [{"var": "x"}, "on"]}),
        "empty-targeting": flag(targeting={}),
        "no-default": flag(defaultVariant=None),
        "const": flag(targeting={"if": [{"==": [1, 1]}, "on", "off"]}),
    }})
    assert fs.flags["s"].static_result is not None and fs.flags["s"].static_result.reason is Reason.STATIC
    assert fs.flags["d"].static_result is not None and fs.flags["d"].static_result.reason is Reason.DISABLED
    assert fs.flags["empty-targeting"].rule is None
    assert fs.flags["no-default"].static_result.reason is Reason.DEFAULT  # type: ignore[union-attr]
    const = fs.flags["const"].static_result
    assert const is not None and (const.reason, const.variant) == (Reason.TARGETING_MATCH, "on")


@pytest.mark.parametrize(
    ("targeting", "uses"),
    [
        ({"if": [{">": [{"var": "$flagd.timestamp"}, 1700000000]}, "on"]}, True),
        ({"if": [{"var": "$flagd"}, "on"]}, True),
        ({"if": [{"var": ""}, "on"]}, True),
        ({"if": [{"var": {"cat": ["$flagd.", "timestamp"]}}, "on"]}, True),
        ({"if": [{"var": "$flagd.flagKey"}, "on"]}, False),
        ({"if": [{"var": "email"}, "on"]}, False),
        ({"if": [{"some": [{"var": "list"}, {"var": ""}]}, "on"]}, False),
        ({"fractional": [["on", 1], ["off", 1]]}, False),
    ],
)
def test_uses_timestamp(targeting: Any, uses: bool) -> None:
    fs = compile_document(doc_with(flag(targeting=targeting)))
    assert fs.flags["new-checkout"].uses_timestamp is uses
    assert fs.uses_timestamp is uses


def test_refs_are_recorded_transitively() -> None:
    fs = compile_document(doc_with(flag(targeting={"if": [{"$ref": "a"}, "on"]}),
                                   **{"$evaluators": {"a": {"and": [{"$ref": "b"}, True]}, "b": {"var": "x"}, "unused": True}}))
    assert fs.flags["new-checkout"].refs == frozenset({"a", "b"})


def test_to_document_round_trips() -> None:
    doc = load_document((ROOT / "config" / "flags.json").read_bytes())
    fs = compile_document(doc, version=3, epoch="e1", updated_at=12.5)
    assert (fs.version, fs.epoch, fs.updated_at) == (3, "e1", 12.5)
    again = compile_document(fs.to_document())
    assert again.to_document() == fs.to_document()
