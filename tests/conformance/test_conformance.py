"""Differential conformance: flagedge's engine against flagd's JS evaluator
(@openfeature/flagd-core 4.0.1, json-logic-engine 5.0.7), per DESIGN §2."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import corpus
from tests.conformance.compare import (
    _MISSING,
    Outcome,
    canon,
    compare_docs,
    compile_py,
    evaluate_py,
    js_outcome,
)
from tests.conformance.generator import OPERATORS, generate
from tests.conformance.reference import ReferenceUnavailable, run_docs_or_fail, run_reference

SEED = int(os.environ.get("FLAGEDGE_CONFORMANCE_SEED", "20261125"))
N_DOCS = int(os.environ.get("FLAGEDGE_CONFORMANCE_DOCS", "3000"))

pytestmark = pytest.mark.conformance


def _reference(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return run_reference(requests)
    except ReferenceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _engine() -> tuple[Any, Any]:
    from proxy.evaluation.documents import compile_document
    from proxy.evaluation.engine import evaluate

    return compile_document, evaluate


@pytest.mark.slow
def test_generated_flags_match_the_reference(reference_prefix: Path) -> None:
    compile_document, evaluate = _engine()
    started = time.monotonic()
    gen = generate(SEED, N_DOCS)
    missing = [op for op in OPERATORS if gen.operators[op] < 20]
    assert not missing, f"generator under-exercises operators: {missing}"

    docs = [(d.doc, [(c.key, c.context) for c in d.cases]) for d in gen.docs]
    replies = run_docs_or_fail(docs)
    report = compare_docs(docs, replies, compile_document, evaluate)
    elapsed = time.monotonic() - started
    print(
        f"\nconformance: seed {SEED}, {len(docs)} documents, {report.flags} flags, "
        f"{report.compared} cases in {elapsed:.1f}s; reference threw {report.js_threw} "
        f"(compared with plain-JS comparison: {report.plain_js}); "
        f"outcomes {dict(report.outcomes)}"
    )
    assert report.compared >= 10 * len(docs)
    # The generator must reach every outcome, and the reference must rarely throw.
    for kind in ("STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED", "ERROR/GENERAL",
                 "ERROR/FLAG_NOT_FOUND"):
        assert report.outcomes[kind] > 0, f"no {kind} outcome generated"
    assert report.js_threw <= 0.05 * report.compared, "too many throwing rules generated"
    if report.mismatches:
        from tests.conformance.shrink import shrink

        pytest.fail(report.render(shrink=lambda m: shrink(m, compile_document, evaluate)),
                    pytrace=False)


@pytest.fixture(scope="module")
def corpus_results(reference_prefix: Path) -> dict[str, tuple[dict[str, Any], Outcome]]:
    compile_document, evaluate = _engine()
    requests = [
        {"id": i, "doc": e.document(), "cases": [{"key": e.eval_key or e.key, "context": e.context}]}
        for i, e in enumerate(corpus.ENTRIES)
    ]
    replies = _reference(requests)
    out = {}
    for e, reply in zip(corpus.ENTRIES, replies, strict=True):
        assert "load_error" not in reply, f"{e.name}: reference refused {reply['load_error']}"
        py = evaluate_py(compile_py(e.document(), compile_document), e.eval_key or e.key,
                         e.context, evaluate)
        out[e.name] = (reply["results"][0], py)
    return out


def _check(got: Outcome, want: corpus.Expect) -> list[str]:
    problems = []
    for attr in ("reason", "variant", "error_code"):
        if getattr(got, attr) != getattr(want, attr):
            problems.append(f"{attr} {getattr(got, attr)!r} != {getattr(want, attr)!r}")
    if (want.value is corpus.NO_VALUE) != (got.value is _MISSING) or (
        want.value is not corpus.NO_VALUE and canon(got.value) != canon(want.value)
    ):
        problems.append(f"value {got.value!r} != {want.value!r}")
    if want.metadata is not None and canon(dict(got.metadata)) != canon(want.metadata):
        problems.append(f"metadata {dict(got.metadata)!r} != {want.metadata!r}")
    return problems


@pytest.mark.parametrize("entry", corpus.ENTRIES, ids=[e.name for e in corpus.ENTRIES])
def test_corpus_case(entry: corpus.Entry, corpus_results: dict[str, Any]) -> None:
    raw, py = corpus_results[entry.name]
    js, used_alt = js_outcome(raw)
    where = f"document {entry.document()} context {entry.context}"
    if entry.reference == "diverges":
        assert entry.js_expect is not None
        assert not _check(js, entry.js_expect), f"reference no longer diverges here: {raw}; {where}"
    else:
        assert used_alt == (entry.reference == "plain-js"), f"reference threw or not: {raw}"
        assert not _check(js, entry.expect), f"reference: {_check(js, entry.expect)}; {where}"
    assert not _check(py, entry.expect), (
        f"flagedge: {_check(py, entry.expect)}; got {py.brief()}; {where}"
    )


_F = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
REFUSED_BY_BOTH = {
    "unknown state": {"flags": {"f": {**_F, "state": "BOGUS"}}},
    "defaultVariant not a variant": {"flags": {"f": {**_F, "defaultVariant": "b"}}},
    "no variants": {"flags": {"f": {"state": "ENABLED", "defaultVariant": "a"}}},
    "no state": {"flags": {"f": {"variants": {"a": 1}, "defaultVariant": "a"}}},
    "unknown operator": {"flags": {"f": {**_F, "targeting": {"nope": [1]}}}},
    "unknown $ref": {"flags": {"f": {**_F, "targeting": {"$ref": "x"}}}},
    "cyclic $ref": {"flags": {"f": {**_F, "targeting": {"$ref": "x"}}},
                    "$evaluators": {"x": {"$ref": "y"}, "y": {"$ref": "x"}}},
    "operation with two keys": {"flags": {"f": {**_F, "targeting": {"if": [True, "a"], "x": 1}}}},
    "constant division by zero": {"flags": {"f": {**_F, "targeting": {"/": [1, 0]}}}},
}


@pytest.mark.parametrize("name", list(REFUSED_BY_BOTH))
def test_invalid_documents_refused_by_both(name: str, reference_prefix: Path) -> None:
    """What the reference refuses (the document, or the flag's targeting: PARSE_ERROR),
    flagedge refuses at load with the flag's path."""
    from proxy.evaluation.documents import compile_document
    from proxy.model import InvalidDocument

    doc = REFUSED_BY_BOTH[name]
    (reply,) = _reference([{"id": 0, "doc": doc, "cases": [{"key": "f", "context": {}}]}])
    assert "load_error" in reply or reply["results"][0].get("targetingInvalid"), reply
    with pytest.raises(InvalidDocument) as exc:
        compile_document(doc)
    assert any(p.path.startswith(("flags.f", "$evaluators")) for p in exc.value.problems), (
        exc.value.problems
    )
