"""Strict at write time, tolerant at serve time (DESIGN §2, issue 26): a source serves every
valid flag of a document and each invalid one as the error flagd gives for it when it
evaluates; flagd's operators that flagedge checks at load (arity, literal sem_ver operands, a
non-bucket first argument of fractional) are served as flagd evaluates them (null), while
push/validate still refuse them with their paths."""

from __future__ import annotations

import orjson
import pytest

from proxy.evaluation.documents import compile_document, validate_document
from proxy.evaluation.engine import evaluate, evaluate_all, explain
from proxy.model import ErrorCode, InvalidDocument, Reason

VARIANTS = {"yes": "yes", "no": "no", "fallback": "fallback"}


def flag(targeting: object, **extra: object) -> dict:
    return {"state": "ENABLED", "variants": VARIANTS, "defaultVariant": "fallback",
            "targeting": targeting, **extra}


GOOD = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}

DOC = {
    "flags": {
        "good": GOOD,
        "unknown-op": flag({"invalid": [1]}),
        "unknown-ref": flag({"if": [{"$ref": "nope"}, "yes", "no"]}),
        "no-such-variant": flag({"if": [True, "three", "no"]}),
        "bad-state": {**GOOD, "state": "MAYBE"},
        "not-an-object": 7,
        "flags.with.dots": flag({"invalid": []}),
    },
}


def test_strict_compile_still_refuses_the_document_with_every_path():
    with pytest.raises(InvalidDocument) as err:
        compile_document(DOC)
    paths = {p.path for p in err.value.problems}
    assert {"flags.unknown-op.targeting", "flags.unknown-ref.targeting.if[0]",
            "flags.no-such-variant.targeting", "flags.bad-state.state",
            "flags.not-an-object"} <= paths


def test_tolerant_compile_serves_the_valid_flags_and_each_invalid_one_as_its_error():
    fs = compile_document(DOC, tolerant=True)
    assert evaluate(fs, "good", {}).value is True
    codes = {k: evaluate(fs, k, {}).error_code for k in DOC["flags"] if k != "good"}
    assert codes == {
        "unknown-op": ErrorCode.PARSE_ERROR,
        "unknown-ref": ErrorCode.PARSE_ERROR,
        "no-such-variant": ErrorCode.GENERAL,  # flagd finds that out when it evaluates
        "bad-state": ErrorCode.PARSE_ERROR,
        "not-an-object": ErrorCode.PARSE_ERROR,
        "flags.with.dots": ErrorCode.PARSE_ERROR,
    }
    assert "unknown operator 'invalid'" in evaluate(fs, "unknown-op", {}).error_details
    assert set(fs.rejected) == set(DOC["flags"]) - {"good"}
    bulk = {r.key: r for r in evaluate_all(fs, {})}
    assert bulk["good"].value is True and bulk["unknown-ref"].error_code is ErrorCode.PARSE_ERROR


def test_tolerant_compile_still_refuses_what_is_no_flag_document():
    for bad in (b"{not json", b"[]", b'{"flags": 3}'):
        with pytest.raises(InvalidDocument):
            compile_document(bad, tolerant=True)


WARNED = {
    "semver-arity": (flag({"sem_ver": [{"var": "v"}, "="]}), "flags.semver-arity.targeting.sem_ver"),
    "semver-op": (flag({"sem_ver": [{"var": "v"}, "===", "1.0.0"]}),
                  "flags.semver-op.targeting.sem_ver[1]"),
    "semver-target": (flag({"sem_ver": [{"var": "v"}, "=", "2.0.0.0"]}),
                      "flags.semver-target.targeting.sem_ver[2]"),
    "starts-arity": (flag({"starts_with": ["abc"]}), "flags.starts-arity.targeting.starts_with"),
    "ends-arity": (flag({"ends_with": [{"var": "v"}, "a", "b"]}),
                   "flags.ends-arity.targeting.ends_with"),
    "fractional-null": (flag({"fractional": [None, ["yes", 50], ["no", 50]]}),
                        "flags.fractional-null.targeting.fractional[0]"),
    "fractional-weight": (flag({"fractional": [["yes", 50.5], ["no", 50]]}),
                          "flags.fractional-weight.targeting.fractional[0]"),
    "fractional-bucket": (flag({"fractional": [["yes", 1, 2], ["no", 50]]}),
                          "flags.fractional-bucket.targeting.fractional[0]"),
}


@pytest.mark.parametrize("key", sorted(WARNED))
def test_flagd_operator_checks_refuse_at_write_time_and_serve_null_like_flagd(key):
    raw, path = WARNED[key]
    doc = {"flags": {key: raw}}
    problems = validate_document(orjson.dumps(doc))
    assert [p.path for p in problems] == [path] and all(p.warning for p in problems)
    with pytest.raises(InvalidDocument):
        compile_document(doc)
    fs = compile_document(doc, tolerant=True)
    assert fs.rejected == {}  # served as flagd serves it, not rejected
    result = evaluate(fs, key, {"v": "1.0.0", "targetingKey": "u"})
    assert (result.reason, result.value) == (Reason.DEFAULT, "fallback")


def test_a_warned_sem_ver_still_evaluates_its_arguments():
    # the reference evaluates the arguments before answering null: an error there is GENERAL
    doc = {"flags": {"f": flag({"sem_ver": [{"max": [{"var": "v"}]}, "===", "1.0.0"]})}}
    fs = compile_document(doc, tolerant=True)
    assert evaluate(fs, "f", {"v": "x"}).error_code is ErrorCode.GENERAL
    assert evaluate(fs, "f", {"v": 1}).reason is Reason.DEFAULT


def test_rejections_are_keyed_by_flag_even_with_member_names_in_the_key():
    doc = {"flags": {"a": GOOD, "a.targeting": {**GOOD, "state": "MAYBE"}},
           "$evaluators": {"e": {"invalid": []}}}
    fs = compile_document(doc, tolerant=True)
    assert set(fs.rejected) == {"a.targeting", ""}  # "" : the unused invalid evaluator
    assert evaluate(fs, "a", {}).value is True


def test_explain_names_the_problem_of_an_invalid_flag_and_traces_a_warned_one():
    fs = compile_document(DOC, tolerant=True)
    result, lines = explain(fs, "unknown-op", {})
    assert result.error_code is ErrorCode.PARSE_ERROR
    assert lines == ["invalid flag definition -> error PARSE_ERROR: "
                     "flags.unknown-op.targeting: unknown operator 'invalid'"]
    fs = compile_document({"flags": {"s": WARNED["semver-op"][0]}}, tolerant=True)
    result, lines = explain(fs, "s", {"v": "1.0.0"})
    assert result.reason is Reason.DEFAULT and "could not be traced" not in " ".join(lines)
