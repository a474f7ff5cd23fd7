"""Differential conformance of hashing generation v3 (DESIGN §9): flagedge's ``fractional``
compiled for v3 against openfeature-flagd-core 2.x (``reference_v3.py``), on the documents and
contexts v2's differential generates (same generator, same seed), each also with non-ASCII
flag keys and targetingKeys.

Two comparisons:

- every ``fractional`` call the reference makes (its evaluated arguments, its answer) is
  answered alike by flagedge's v3 (``bucketing.decide_v3``): the CBOR encoding and the buckets
  on exactly the values the reference hashed;
- every case of a flag that uses ``fractional`` has the same outcome (reason, variant, value)
  in flagedge (compiled for v3, served as a source serves it) and in the reference. A case
  that differs is a hashing mismatch unless
  - one engine called ``fractional`` for it and the other did not, or it differs as much with v2
    hashing on both sides (the reference running ``reference_v3.fractional_v2``): the two
    JsonLogic engines differ (panzi-json-logic is no json-logic-engine 5.0.7: ``all`` over a
    missing array is false there; v2's differential against the JS reference covers
    flagedge there), or
  - a computed weight is an integral number that the reference's arithmetic made a Python
    float (``{"*": [{"var": "rollout"}, 2]}`` with rollout ``"12"`` is 24.0 there), which it
    refuses while JavaScript's one number type (and flagedge, DESIGN §2) has 24: the
    reference given that weight as an integer (``fractional_js_numbers``) answers as
    flagedge, and the rule writes no float weight literally (literal ``50.0`` is refused by
    both). The README lists this divergence.
  Both kinds are counted and printed, not failed.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate, explain
from proxy.evaluation.jsonlogic.bucketing import decide_v3
from proxy.model import FractionalHash
from tests.conformance.compare import Outcome, minimal_doc, py_outcome
from tests.conformance.generator import generate
from tests.conformance.reference_v3 import (
    Recorder,
    Reference,
    fractional_js_numbers,
    fractional_v2,
    operator,
    v3_operator,
)

SEED = int(os.environ.get("FLAGEDGE_CONFORMANCE_SEED", "20261125"))
N_DOCS = int(os.environ.get("FLAGEDGE_CONFORMANCE_DOCS", "3000"))
SUFFIX = "-ñé日本😀"  # 2-, 3- and 4-byte UTF-8; a surrogate pair in UTF-16

pytestmark = pytest.mark.conformance


def non_ascii(doc: dict[str, Any], cases: list[tuple[str, dict[str, Any]]]
              ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The same document and cases with non-ASCII flag keys, targetingKeys and emails (the
    values generated bucketBy expressions read)."""
    doc = orjson.loads(orjson.dumps(doc))
    doc["flags"] = {k + SUFFIX: v for k, v in doc["flags"].items()}
    out = []
    for key, ctx in cases:
        ctx = orjson.loads(orjson.dumps(ctx))
        for attr in ("targetingKey", "email"):
            if isinstance(ctx.get(attr), str) and ctx[attr]:
                ctx[attr] += SUFFIX
        out.append((key + SUFFIX, ctx))
    return doc, out


def literal_float_weight(node: Any) -> bool:
    """A ``fractional`` bucket written with a float weight (``["a", 50.0]``) anywhere."""
    if isinstance(node, dict):
        args = node.get("fractional")
        if isinstance(args, list) and any(
                isinstance(b, list) and len(b) == 2 and isinstance(b[1], float) for b in args):
            return True
        return any(literal_float_weight(v) for v in node.values())
    if isinstance(node, list):
        return any(literal_float_weight(v) for v in node)
    return False


@dataclass
class Report:
    calls: int = 0
    calls_non_ascii: int = 0
    call_mismatches: list[str] = field(default_factory=list)
    compared: int = 0
    same: int = 0
    engines_differ: list[str] = field(default_factory=list)
    number_typing: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


def _flagedge(fs: Any, key: str, ctx: dict[str, Any]) -> Outcome:
    return py_outcome(evaluate(fs, key, orjson.loads(orjson.dumps(ctx))))


def _render(doc: dict[str, Any], key: str, ctx: Any, *pairs: tuple[str, Outcome]) -> str:
    shown = "; ".join(f"{name}: {orjson.dumps(o.brief()).decode()}" for name, o in pairs)
    return (f"{orjson.dumps(minimal_doc(doc, key)).decode()} key {key!r} context "
            f"{orjson.dumps(ctx).decode()} -> {shown}")


def compare_doc(doc: dict[str, Any], cases: list[tuple[str, dict[str, Any]]],
                report: Report) -> None:
    v3 = compile_document(orjson.loads(orjson.dumps(doc)), tolerant=True,
                          fractional_hash=FractionalHash.V3)
    v2 = compile_document(orjson.loads(orjson.dumps(doc)), tolerant=True)
    ref = Reference(doc)
    recorder = Recorder()
    for key, ctx in cases:
        flag = v3.flags.get(key)
        if flag is None or not flag.fractional:
            continue
        kind = flag.variant_type.value
        calls_before = len(recorder.calls)
        with operator(v3_operator(recorder)):
            theirs = ref.evaluate(key, kind, ctx)
        reached = len(recorder.calls) > calls_before
        ours = _flagedge(v3, key, ctx)
        report.compared += 1
        report.outcomes[ours.kind()] += 1
        if ours.key() == theirs.key():
            report.same += 1
            continue
        with operator(fractional_v2):
            theirs_v2 = ref.evaluate(key, kind, ctx)
        ours_v2 = _flagedge(v2, key, ctx)
        line = _render(doc, key, ctx, ("reference v3", theirs), ("flagedge v3", ours),
                       ("reference on v2 hashing", theirs_v2), ("flagedge v2", ours_v2))
        ours_reached = any(line.startswith("fractional") for line in explain(v3, key, ctx)[1])
        if reached != ours_reached or ours_v2.key() != theirs_v2.key():
            # one engine's JsonLogic took a path to fractional the other did not, or the
            # engines differ with v2 hashing on both sides too
            report.engines_differ.append(line)
            continue
        with operator(fractional_js_numbers):
            theirs_js = ref.evaluate(key, kind, ctx)
        if theirs_js.key() == ours.key() and not literal_float_weight(minimal_doc(doc, key)):
            report.number_typing.append(line)
        else:
            report.mismatches.append(line)
    for call in recorder.calls:
        report.calls += 1
        report.calls_non_ascii += not orjson.dumps([call.targeting_key, call.flagd,
                                                    call.args]).isascii()
        data = {"targetingKey": call.targeting_key}
        if call.flagd is not None:
            data["$flagd"] = call.flagd
        args = list(call.args)
        ours_call = decide_v3(data, args[0], args[1:], None) if args else None
        if ours_call != call.result or type(ours_call) is not type(call.result):
            report.call_mismatches.append(
                f"fractional({orjson.dumps(data).decode()}, *{orjson.dumps(args).decode()}): "
                f"reference {call.result!r}, flagedge {ours_call!r}")


@pytest.mark.slow
def test_generated_fractional_matches_flagd_core_2() -> None:
    started = time.monotonic()
    report = Report()
    for d in generate(SEED, N_DOCS).docs:
        cases = [(c.key, c.context) for c in d.cases]
        compare_doc(d.doc, cases, report)
        compare_doc(*non_ascii(d.doc, cases), report)
    elapsed = time.monotonic() - started
    print(f"\nv3 conformance: seed {SEED}, {N_DOCS} documents (and their non-ASCII twins) in "
          f"{elapsed:.1f}s: {report.compared} cases of fractional flags, {report.same} the "
          f"same, {len(report.engines_differ)} where the JsonLogic engines differ (v2 hashing "
          f"too), {len(report.number_typing)} where a computed weight is a float there and "
          f"an integer in JavaScript, {len(report.mismatches)} mismatches; outcomes {dict(report.outcomes)}; "
          f"{report.calls} fractional calls ({report.calls_non_ascii} non-ASCII), "
          f"{len(report.call_mismatches)} answered otherwise")
    for line in report.engines_differ[:3]:
        print("engines differ:", line)
    for line in report.number_typing[:3]:
        print("number typing:", line)
    assert report.compared >= N_DOCS, "too few fractional cases generated"
    assert report.calls >= N_DOCS and report.calls_non_ascii >= N_DOCS // 4
    for kind in ("TARGETING_MATCH", "DEFAULT"):
        assert report.outcomes[kind] > report.compared // 20, f"too few {kind} outcomes"
    assert not report.call_mismatches, "\n".join(report.call_mismatches[:20])
    assert not report.mismatches, (f"{len(report.mismatches)} cases differ from "
                                   "openfeature-flagd-core 2.x:\n"
                                   + "\n".join(report.mismatches[:20]))
    # the JsonLogic engines rarely differ on these rules: a flood would hide hashing cases
    assert len(report.engines_differ) + len(report.number_typing) <= report.compared // 20
