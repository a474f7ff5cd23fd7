"""Focused differential checks against flagd-core 4.0.1: sem_ver over many versions, and
numbers printed the way JavaScript prints them (they become variant names and strings)."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.compare import classify, compile_py, evaluate_py, js_outcome
from tests.conformance.generator import SEMVER_OPS
from tests.conformance.reference import (
    ReferenceUnavailable,
    js_strings,
    run_docs_or_fail,
)

pytestmark = pytest.mark.conformance


def _engine() -> tuple[Any, Any]:
    from proxy.evaluation.documents import compile_document
    from proxy.evaluation.engine import evaluate

    return compile_document, evaluate


def _compare_rules(rules: list[Any], contexts: list[dict[str, Any]], *,
                   per_doc: int = 60) -> tuple[int, list[str]]:
    """Every rule (as a flag's targeting, variants a/b, default b) on every context, in both
    engines; returns (cases compared, descriptions of mismatches)."""
    compile_document, evaluate = _engine()
    variants = {"a": "A", "b": "B"}
    docs = []
    for start in range(0, len(rules), per_doc):
        flags = {f"r{i}": {"state": "ENABLED", "variants": variants, "defaultVariant": "b",
                           "targeting": rule}
                 for i, rule in enumerate(rules[start:start + per_doc], start)}
        docs.append(({"flags": flags}, [(k, c) for k in flags for c in contexts]))
    replies = run_docs_or_fail(docs)
    compared, bad = 0, []
    for (doc, cases), reply in zip(docs, replies, strict=True):
        pydoc = compile_py(doc, compile_document)
        for (key, ctx), raw in zip(cases, reply["results"], strict=True):
            js, _ = js_outcome(raw)
            py = evaluate_py(pydoc, key, ctx, evaluate)
            compared += 1
            if classify(raw, js, key, pydoc, py) == "mismatch":
                bad.append(f"{doc['flags'][key]['targeting']} {ctx}: reference {js.brief()} "
                           f"flagedge {py.brief()}")
    return compared, bad


def _version(r: random.Random, *, valid: bool) -> str:
    def part() -> str:
        return str(r.choice([0, 1, 2, 9, 10, 11, 99, r.randrange(0, 1000)]))

    parts = r.choice([1, 2, 3, 3, 3] if valid else [1, 2, 3, 4])
    base = ".".join(part() for _ in range(parts))
    if valid and parts < 3:  # partial versions are plain numbers ("1.2", not "1.2-rc")
        return r.choice(["", "v"]) + base
    if r.random() < 0.3:
        base += "-" + ".".join(r.choice(["alpha", "beta", "rc", "0", "1", "11", "x-y", "a1"])
                               for _ in range(r.randrange(1, 3)))
    if r.random() < 0.15:
        base += "+" + r.choice(["b1", "build.5", "sha.abc", "001"])
    if r.random() < 0.15:
        base = r.choice(["v", "V"]) + base
    if not valid and r.random() < 0.2:
        base = r.choice(["=", " ", "vv", "01.", ""]) + base + r.choice(["", " ", "-", ".x"])
    return base


def test_sem_ver_matches_the_reference(reference_prefix: Path) -> None:
    compile_document, evaluate = _engine()
    r = random.Random(7)
    docs: list[tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]] = []
    for _ in range(200):
        target = _version(r, valid=True)
        variants = {"true": 1, "false": 0, "none": 2}
        flags = {
            f"f-{i}": {"state": "ENABLED", "variants": variants, "defaultVariant": "none",
                       "targeting": {"sem_ver": [{"var": "v"}, op, target]}}
            for i, op in enumerate(SEMVER_OPS)
        }
        flags["reverse"] = {"state": "ENABLED", "variants": variants, "defaultVariant": "none",
                            "targeting": {"sem_ver": [target, r.choice(SEMVER_OPS), {"var": "v"}]}}
        cases = [(k, {"v": _version(r, valid=r.random() < 0.8) if r.random() < 0.95
                      else r.choice([1, 1.2, None, True])})
                 for k in flags for _ in range(3)]
        docs.append(({"flags": flags}, cases))
    replies = run_docs_or_fail(docs)
    compared, bad = 0, []
    for (doc, cases), reply in zip(docs, replies, strict=True):
        pydoc = compile_py(doc, compile_document)
        assert not pydoc.rejected, f"flagedge refused valid sem_ver targets: {pydoc.rejected}"
        for (key, ctx), raw in zip(cases, reply["results"], strict=True):
            js, _ = js_outcome(raw)
            py = evaluate_py(pydoc, key, ctx, evaluate)
            compared += 1
            if classify(raw, js, key, pydoc, py) == "mismatch":
                bad.append(f"{doc['flags'][key]['targeting']} {ctx}: reference {js.brief()} "
                           f"flagedge {py.brief()}")
    assert compared > 5000
    assert not bad, f"{len(bad)} of {compared} sem_ver cases differ:\n" + "\n".join(bad[:20])


def _numbers(r: random.Random, n: int) -> list[Any]:
    out: list[Any] = [1e21, 1e-7, 1e-6, 123e-20, 5e-324, 1.7976931348623157e308, 1e20,
                      9.999999999999999e20, -0.0, 2**53 + 1, 0.1 + 0.2, 1e16, 12345678901234567890]
    while len(out) < n:
        k = r.random()
        if k < 0.4:
            x = struct.unpack("d", struct.pack("Q", r.getrandbits(64)))[0]
            if x != x or x in (float("inf"), float("-inf")):
                continue
        elif k < 0.6:
            x = r.uniform(-1e6, 1e6)
        elif k < 0.75:
            x = r.randrange(-(2**60), 2**60)
        elif k < 0.85:
            x = float(r.randrange(-(2**60), 2**60))
        else:
            x = round(r.uniform(0, 100), r.randrange(0, 6))
        out.append(x)
    return out


def test_numbers_print_as_in_javascript(reference_prefix: Path) -> None:
    """A number concatenated into a string (and so into a variant name) reads as JS prints it."""
    compile_document, evaluate = _engine()
    nums = _numbers(random.Random(11), 2000)
    try:
        strings = js_strings(nums)
    except ReferenceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    bad = []
    for x, s in zip(nums, strings, strict=True):
        doc = {"flags": {"f": {"state": "ENABLED", "variants": {"n=" + s: 1, "other": 2},
                               "defaultVariant": "other",
                               "targeting": {"cat": ["n=", {"var": "x"}]}}}}
        res = evaluate(compile_document(doc), "f", {"x": x})
        if res.variant != "n=" + s:
            bad.append(f"{x!r}: JavaScript prints {s!r}, flagedge named variant {res.variant!r}")
    assert not bad, "\n".join(bad[:20])


_VALUES: list[Any] = [0, 1, -0.0, 1.0, 2, "", "0", "1", "gold", " ", "true", "null", "1e0",
                      " 1 ", "0x1", True, False, None, [], ["gold"], [0], {}]
_LITERALS: list[Any] = ["", "0", "1", "gold", " ", "true", "null", "1.0", " 1", 1, 0, 1.5,
                        True, False, None]


def test_equality_and_membership_matrix(reference_prefix: Path) -> None:
    """Every (in)equality operator and `in`, context value on either side of a literal, over
    values JS compares in its own ways (fast paths in the engine must keep these)."""
    rules: list[Any] = []
    for op in ("==", "!=", "===", "!==", "<", ">="):
        for lit in _LITERALS:
            rules += [{op: [{"var": "x"}, lit]}, {op: [lit, {"var": "x"}]}]
    for hay in (["gold", 1, "", True, None, 0, "0"], ["gold", "silver"], [1, 2.0, 3], "gold1null"):
        rules.append({"in": [{"var": "x"}, hay]})
    rules = [{"if": [rule, "a", "b"]} for rule in rules]
    compared, bad = _compare_rules(rules, [{"x": x} for x in _VALUES])
    assert compared > 4000
    assert not bad, f"{len(bad)} of {compared} cases differ:\n" + "\n".join(bad[:20])


_U, _S = {"var": "u"}, {"var": "s"}
_RIGHT_OPERANDS: list[Any] = [
    {"in": [_U, _S]}, {"cat": [_U, _S]}, {"+": [_U, _S]}, {"-": [_U, _S]}, {"*": [_U, _S]},
    {"/": [_U, _S]}, {"%": [_U, _S]}, {"max": [_U, _S]}, {"min": [_U, _S]}, {"merge": [_U, _S]},
    {"substr": [_U, _S]}, {"and": [_U, _S]}, {"or": [_U, _S]}, {"if": [_U, _S, _U]},
    {"?:": [_S, _U, _S]}, {"==": [_U, _S]}, {"!=": [_U, _S]}, {"<": [_U, _S]}, {"<": [_U, _S, _U]},
    {"!": [_U]}, {"!!": [_S]}, {"missing": ["u", "s"]}, {"missing_some": [1, ["u", "s"]]},
    {"map": [_U, {"var": ""}]}, {"filter": [_S, {"var": ""}]}, {"some": [_U, {"var": ""}]},
    {"all": [_S, {"var": ""}]}, {"none": [_U, {"var": ""}]}, {"reduce": [_U, {"var": "current"}, _S]},
    {"var": ["u", _S]}, {"var": [_U, _S]}, {"starts_with": [_U, _S]}, {"ends_with": [_U, _S]},
    {"sem_ver": [_U, "=", _S]}, {"fractional": [_U, ["a", 1]]},
]


def _operand_contexts(vals: list[Any], step: int) -> list[dict[str, Any]]:
    contexts = []
    for u in vals:
        for s in vals:
            for t in (None, 0, "", "x", False):
                contexts.append({k: x for k, x in (("u", u), ("s", s), ("t", t)) if x is not None})
    return contexts[::step]


def test_operands_are_read_in_the_reference_order(reference_prefix: Path) -> None:
    """json-logic-engine's compiled comparisons check their right operand against a shared
    `prev` register that the operand's own code overwrites (its last var read): every
    operator as a right operand, over values where the order of reads changes the answer."""
    rules = [{"if": [{op: [{"var": "t"}, right]}, "a", "b"]}
             for right in _RIGHT_OPERANDS for op in ("==", "<", "!=")]
    vals: list[Any] = [None, 0, "", False, "x", "1", 1, [], ["x"]]
    compared, bad = _compare_rules(rules, _operand_contexts(vals, 4))
    assert compared > 10000
    assert not bad, f"{len(bad)} of {compared} cases differ:\n" + "\n".join(bad[:20])


def test_short_ifs_run_the_reference_interpreter(reference_prefix: Path) -> None:
    """Under a 1- or 2-argument if the reference interprets instead of compiling: every
    operator there, on its own, compared, and negated, over odd values (NaN-ish strings,
    objects, arrays, booleans)."""
    rules: list[Any] = []
    for right in _RIGHT_OPERANDS:
        rules += [{"if": [right, "a"]}, {"if": [{"==": [right, {"var": "t"}]}, "a"]},
                  {"if": [{"<": [{"var": "t"}, right]}, "a"]}, {"?:": [{"!": [right]}, "a"]}]
    vals: list[Any] = [None, 0, "", False, "x", "1", 1, [], ["x"], {}, "12abc", 2.5, True]
    compared, bad = _compare_rules(rules, _operand_contexts(vals, 9))
    assert compared > 10000
    assert not bad, f"{len(bad)} of {compared} cases differ:\n" + "\n".join(bad[:20])
