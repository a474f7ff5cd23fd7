"""fractional, hashing generation v3: murmur3 of the canonical CBOR of the bucketing value, as
openfeature-flagd-core 2.0.0's ``custom_ops.fractional`` computes it.

The expected buckets below were computed with that reference (``fractional(data, *args)``)
and are written down, so these tests need no reference installed; the conformance suite
compares with the live reference on generated documents (tests/conformance/test_v3.py).
"""

from __future__ import annotations

from typing import Any

import cbor2
import mmh3
import pytest

from proxy.evaluation.documents import apply_after, compile_document, validate_document
from proxy.evaluation.engine import evaluate, evaluate_all, explain
from proxy.evaluation.jsonlogic.bucketing import (
    cbor_key,
    decide_v3,
    normalize_numbers,
    shorthand_key,
    text_head,
)
from proxy.model import FractionalHash, Reason

V2, V3 = FractionalHash.V2, FractionalHash.V3
ABC = {"a": "a", "b": "b", "c": "c"}
BOOL = {"on": True, "off": False}


def _doc(targeting: Any, variants: dict[str, Any] | None = None, key: str = "f",
         **extra: Any) -> dict[str, Any]:
    variants = variants or ABC
    default = "c" if "c" in variants else "off"
    flags = {key: {"state": "ENABLED", "variants": variants, "defaultVariant": default,
                   "targeting": targeting}}
    return {"flags": flags, **extra}


def _v3(targeting: Any, variants: dict[str, Any] | None = None, key: str = "f") -> Any:
    return compile_document(_doc(targeting, variants, key), fractional_hash=V3, tolerant=True)


def test_shorthand_buckets_the_cbor_of_flag_key_and_targeting_key() -> None:
    fs = _v3({"fractional": [["on", 25], ["off", 75]]}, BOOL, key="new-checkout")
    got = [evaluate(fs, "new-checkout", {"targetingKey": f"user-{i}"}).variant for i in range(8)]
    assert got == ["on", "off", "on", "on", "off", "on", "off", "off"]  # the reference's
    v2 = compile_document(_doc({"fractional": [["on", 25], ["off", 75]]}, BOOL, "new-checkout"))
    assert [evaluate(v2, "new-checkout", {"targetingKey": f"user-{i}"}).variant
            for i in range(8)] == ["off", "off", "on", "off", "off", "off", "off", "off"]


def test_the_hashed_bytes_are_canonical_cbor() -> None:
    key = shorthand_key({"targetingKey": "user-1"}, "new-checkout")
    assert key == bytes.fromhex("826c6e65772d636865636b6f757466757365722d31")
    assert mmh3.hash(key, 0, False) == 2132831605
    assert cbor_key({"b": 1, "a": 2}) == bytes.fromhex("a2616102616201")  # keys sorted
    assert cbor_key("é") == b"\x62\xc3\xa9"  # text strings are UTF-8


def test_non_ascii_flag_and_targeting_keys() -> None:
    fs = _v3({"fractional": [["a"], ["b"], ["c"]]}, key="flägé")
    got = [evaluate(fs, "flägé", {"targetingKey": f"日本-{i}"}).variant for i in range(8)]
    assert got == ["b", "c", "c", "a", "c", "a", "b", "c"]


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_the_hand_built_shorthand_encoding_is_cbor2s(size: int) -> None:
    tk = "x" * size if size else ""
    assert text_head(size) + tk.encode() == cbor2.dumps(tk, canonical=True)
    if size:
        fk = "k" * (size % 300 + 1)
        assert shorthand_key({"targetingKey": tk}, fk) == cbor2.dumps([fk, tk], canonical=True)


def test_bucket_by_expression() -> None:
    fs = _v3({"fractional": [{"var": "email"}, ["c", 34], ["a", 33], ["b", 33]]})
    got = [evaluate(fs, "f", {"email": f"person{i}@example.com"}).variant for i in range(8)]
    assert got == ["a", "b", "a", "c", "c", "a", "a", "a"]


@pytest.mark.parametrize(("value", "want"), [
    (1, "b"), (1.0, "b"), (2.5, "a"), (2.0**64, "b"), (2.0**63, "b"), (-(2.0**63), "a"),
    (True, "a"), ({"k": [1.0]}, "a"), ({"k": [1]}, "a"), ("日本", "a"),
])
def test_bucket_by_any_value(value: Any, want: str) -> None:
    """Non-string values are hashed too (v2 falls back on flagKey + targetingKey); whole
    floats are integers (1.0 like 1), as deep as they are nested; 2^64 stays a float."""
    fs = _v3({"fractional": [{"var": "v"}, ["a", 50], ["b", 50]]})
    assert evaluate(fs, "f", {"targetingKey": "ü", "v": value}).variant == want


def test_normalize_numbers_bounds() -> None:
    assert normalize_numbers([1.0, {"x": -0.0}, 2.0**64 - 2048, 2.0**64, 1.5, True]) == [
        1, {"x": 0}, 2**64 - 2048, 2.0**64, 1.5, True]
    assert normalize_numbers(-(2.0**63)).__class__ is int
    assert normalize_numbers(-(2.0**63) - 4096).__class__ is float


def test_a_list_first_argument_is_a_bucket_even_when_computed() -> None:
    """The reference looks at the evaluated first argument: a list there is a bucket, so the
    shorthand applies (with that bucket first)."""
    fs = _v3({"fractional": [{"var": "lst"}, ["a", 50], ["b", 50]]},
             {"a": "a", "b": "b", "c": "c", "1": "1"})
    assert evaluate(fs, "f", {"targetingKey": "ü", "lst": [1]}).variant == "1"
    assert decide_v3({"targetingKey": "ü", "$flagd": {"flagKey": "f"}}, [1],
                     [["a", 50], ["b", 50]], None) == 1


def test_a_folded_list_first_argument_is_a_bucket() -> None:
    fs = _v3({"fractional": [{"merge": [["a"]]}, ["b"]]})
    for i in range(30):
        ctx = {"targetingKey": f"u{i}"}
        want = decide_v3({**ctx, "$flagd": {"flagKey": "f"}}, ["a"], [["b"]], None)
        assert evaluate(fs, "f", ctx).variant == want
    assert {evaluate(fs, "f", {"targetingKey": f"u{i}"}).variant for i in range(30)} == {"a", "b"}


@pytest.mark.parametrize("ctx", [{}, {"targetingKey": ""}])
def test_shorthand_without_a_targeting_key_is_default(ctx: dict[str, Any]) -> None:
    fs = _v3({"fractional": [["a", 50], ["b", 50]]})
    r = evaluate(fs, "f", ctx)
    assert (r.variant, r.reason) == ("c", Reason.DEFAULT)


def test_null_bucket_by_is_default() -> None:
    fs = _v3({"fractional": [{"var": "missing"}, ["a", 50], ["b", 50]]})
    assert evaluate(fs, "f", {"targetingKey": "u"}).reason is Reason.DEFAULT


@pytest.mark.parametrize("weight", [50.0, True, "50", None])
def test_a_weight_that_is_no_integer_gives_null(weight: Any) -> None:
    """v3 refuses 50.0 (v2 counts it as 50) and booleans: the whole result is null."""
    fs = _v3({"fractional": [["a", {"var": "w"}], ["b", 50]]})
    for i in range(20):
        assert evaluate(fs, "f", {"targetingKey": f"u{i}", "w": weight}).reason is Reason.DEFAULT
    ok = _v3({"fractional": [["a", {"var": "w"}], ["b", 50]]})
    assert {evaluate(ok, "f", {"targetingKey": f"u{i}", "w": 50}).variant
            for i in range(40)} == {"a", "b"}


def test_literal_float_weight_is_refused_at_write_and_null_when_served() -> None:
    doc = _doc({"fractional": [["a", 50.0], ["b", 50]]}, **{"$fractionalHash": "v3"})
    assert any("weight must be an integer" in p.message for p in validate_document(doc))
    fs = compile_document(doc, tolerant=True)
    assert fs.fractional_hash is V3
    assert evaluate(fs, "f", {"targetingKey": "u"}).reason is Reason.DEFAULT
    assert not validate_document(_doc({"fractional": [["a", 50.0], ["b", 50]]}))  # v2: fine


def test_zero_total_and_negative_weights() -> None:
    assert evaluate(_v3({"fractional": [["a", 0], ["b", -5]]}), "f",
                    {"targetingKey": "u"}).reason is Reason.DEFAULT
    fs = _v3({"fractional": [["a", 0], ["b", -5], ["c", 3]]})
    assert {evaluate(fs, "f", {"targetingKey": f"u{i}"}).variant for i in range(100)} == {"c"}


def test_constant_bucket_by_and_nested_use() -> None:
    fs = _v3({"if": [{"==": [{"var": "plan"}, "pro"]},
                     {"fractional": ["seed", ["a", 50], ["b", 50]]}, "c"]})
    assert evaluate(fs, "f", {"plan": "pro"}).variant == evaluate(fs, "f", {"plan": "pro",
                                                                          "x": 1}).variant
    assert evaluate(fs, "f", {"plan": "free"}).variant == "c"


def test_flag_key_inside_an_iterator_comes_from_the_element() -> None:
    """Inside map the data is the element: the reference reads ``$flagd`` there (none: "")
    and fails on an element that is no object."""
    rule = {"fractional": [["a"], ["b"]]}
    fs = _v3({"if": [{"some": [{"var": "xs"}, {"==": [rule, "a"]}]}, "a", "b"]})
    ok = evaluate(fs, "f", {"xs": [{"targetingKey": "u1"}]})
    want = decide_v3({"targetingKey": "u1"}, ["a"], [["b"]], None)
    assert ok.variant == ("a" if want == "a" else "b")
    assert evaluate(fs, "f", {"xs": [1]}).error_code is not None


def test_a_document_declares_its_generation() -> None:
    assert compile_document(_doc({"fractional": [["a"], ["b"]]},
                                 **{"$fractionalHash": "v3"})).fractional_hash is V3
    assert compile_document(_doc({"fractional": [["a"], ["b"]]})).fractional_hash is V2
    problems = validate_document(_doc({}, **{"$fractionalHash": "v9"}))
    assert [p.path for p in problems] == ["$fractionalHash"]


def test_a_generation_change_recompiles_only_fractional_flags() -> None:
    doc = {"flags": {
        "split": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
                  "targeting": {"fractional": [["a"], ["b"], ["c"]]}},
        "plain": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
                  "targeting": {"if": [{"var": "x"}, "a", "b"]}},
        "via-ref": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
                    "targeting": {"$ref": "split"}}},
        "$evaluators": {"split": {"fractional": [["a"], ["b"], ["c"]]}}}
    v2 = compile_document(doc, version=1)
    applied = apply_after(v2, {}, v2.evaluators, v2.metadata, version=2, epoch="",
                          updated_at=0.0, fractional_hash=V3)
    v3 = applied.flag_set
    assert v3.fractional_hash is V3 and applied.upserted == {"split", "via-ref"}
    assert v3.flags["plain"] is v2.flags["plain"]
    ctxs = [{"targetingKey": f"user-{i}"} for i in range(50)]
    fresh = compile_document(doc, fractional_hash=V3)
    for key in ("split", "via-ref"):
        assert [evaluate(v3, key, c).variant for c in ctxs] == [
            evaluate(fresh, key, c).variant for c in ctxs]
        assert [evaluate(v3, key, c).variant for c in ctxs] != [
            evaluate(v2, key, c).variant for c in ctxs]


def test_bulk_plans_do_not_reuse_the_other_generations_results() -> None:
    """The plan/memo layer keys on context values: after a generation change, the memoised
    v2 results of the same contexts must not be served."""
    doc = _doc({"fractional": [["a"], ["b"], ["c"]]})
    v2 = compile_document(doc, version=1)
    ctxs = [{"targetingKey": f"user-{i}"} for i in range(60)]
    before = [evaluate_all(v2, c)[0].variant for c in ctxs]
    v3 = apply_after(v2, {}, {}, {}, version=2, epoch="", updated_at=0.0,
                     fractional_hash=V3).flag_set
    from proxy.evaluation.plan import derive_plan

    derive_plan(v2, v3)  # what the bulk endpoint does at publish
    after = [evaluate_all(v3, c)[0].variant for c in ctxs]
    assert after == [evaluate(v3, "f", c).variant for c in ctxs]
    assert after != before


def test_explain_traces_the_cbor_it_hashed() -> None:
    fs = _v3({"fractional": [["on", 25], ["off", 75]]}, BOOL, key="new-checkout")
    result, lines = explain(fs, "new-checkout", {"targetingKey": "user-1"})
    assert result.variant == "off"
    assert any("fractional (v3)" in line and "826c6e65772d" in line for line in lines), lines
