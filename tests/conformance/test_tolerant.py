"""What a source serves for a flag it holds anyway (tolerant compile, issue 26) against the
reference: invalid flags answer the error flagd-core gives for them at evaluation time, and
the flagd-operator checks flagedge makes at write time (warnings) are served as flagd-core
evaluates them. Every case goes through both engines; none is expected by hand."""

from __future__ import annotations

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from tests.conformance.compare import Outcome, js_outcome, py_outcome
from tests.conformance.reference import run_docs_or_fail

pytestmark = pytest.mark.conformance

VARIANTS = {"yes": "yes", "no": "no", "true": "true", "false": "false", "fallback": "fallback"}


def _flag(targeting: object) -> dict:
    return {"state": "ENABLED", "variants": VARIANTS, "defaultVariant": "fallback",
            "targeting": targeting}


FLAGS = {
    # warnings: served as flagd evaluates them
    "semver-arity": _flag({"sem_ver": [{"var": "v"}, "="]}),
    "semver-arity-4": _flag({"sem_ver": [{"var": "v"}, "=", "1.0.0", "x"]}),
    "semver-op": _flag({"sem_ver": [{"var": "v"}, "===", "1.0.0"]}),
    "semver-op-null": _flag({"sem_ver": [{"var": "v"}, None, "1.0.0"]}),
    "semver-target": _flag({"sem_ver": [{"var": "v"}, "=", "2.0.0.0"]}),
    "semver-target-word": _flag({"sem_ver": [{"var": "v"}, ">=", "abc"]}),
    "semver-in-if": _flag({"if": [{"sem_ver": [{"var": "v"}, "=", "x"]}, "yes", "no"]}),
    "starts-arity": _flag({"starts_with": ["abc"]}),
    "starts-arity-3": _flag({"starts_with": [{"var": "v"}, "a", "b"]}),
    "ends-arity": _flag({"ends_with": [{"var": "v"}]}),
    "ends-in-if": _flag({"if": [{"ends_with": [{"var": "v"}]}, "yes", "no"]}),
    "fractional-null": _flag({"fractional": [None, ["yes", 50], ["no", 50]]}),
    "fractional-number": _flag({"fractional": [7, ["yes", 50], ["no", 50]]}),
    "fractional-weight": _flag({"fractional": [["yes", 50.5], ["no", 50]]}),
    "fractional-weight-bool": _flag({"fractional": [["yes", True], ["no", 50]]}),
    "fractional-total": _flag({"fractional": [["yes", 2**31], ["no", 50]]}),
    "fractional-empty-bucket": _flag({"fractional": [[], ["no", 50]]}),
    "fractional-long-bucket": _flag({"fractional": [["yes", 1, 2], ["no", 50]]}),
    "fractional-string-bucket": _flag({"fractional": ["email", "no"]}),
    "fractional-list-variant": _flag({"fractional": [[["yes"], 50], ["no", 50]]}),
    "fractional-no-bucket": _flag({"fractional": []}),
    "fractional-by-only": _flag({"fractional": [{"var": "v"}]}),
    "fractional-not-list": _flag({"fractional": "yes"}),
    "fractional-in-if": _flag({"if": [{"fractional": [["yes", 0.5]]}, "yes", "no"]}),
    # errors: served as the error flagd gives at evaluation time
    "unknown-op": _flag({"invalid": [1]}),
    "unknown-ref": _flag({"if": [{"$ref": "nope"}, "yes", "no"]}),
    "no-such-variant": _flag({"if": [True, "three", "no"]}),
}
CONTEXTS = [{}, {"v": "1.0.0"}, {"v": "2.0.0", "targetingKey": "u-1"}, {"v": "abcdef"},
            {"v": 1}, {"v": None, "targetingKey": "u-2"}]


def test_tolerantly_served_flags_answer_what_the_reference_answers():
    doc = {"flags": FLAGS}
    cases = [(key, ctx) for key in FLAGS for ctx in CONTEXTS]
    (reply,) = run_docs_or_fail([(doc, cases)])
    fs = compile_document(doc, tolerant=True)
    differences = []
    for (key, ctx), js in zip(cases, reply["results"], strict=True):
        want: Outcome = js_outcome(js)[0]
        got = py_outcome(evaluate(fs, key, ctx))
        if got.key() != want.key():
            differences.append(f"{key} {ctx}: flagedge {got}, reference {want}")
    assert not differences, "\n".join(differences)
