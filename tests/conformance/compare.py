"""Outcomes of both engines in one comparable shape, and the comparison of a whole corpus."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.model import InvalidDocument

JSON = Any
_MISSING = "<no value>"


def canon(value: JSON) -> JSON:
    """A form in which equal JSON compares equal across engines: JS has one number type
    (``2.0`` comes back as ``2``), Python keeps bool apart from int only if we do."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        return ("num", int(f) if math.isfinite(f) and f.is_integer() else f)
    if isinstance(value, list):
        return ("list", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("obj", tuple(sorted((k, canon(v)) for k, v in value.items())))
    return ("other", repr(value))


@dataclass(frozen=True)
class Outcome:
    reason: str
    variant: str | None = None
    value: JSON = _MISSING
    error_code: str | None = None
    metadata: Mapping[str, JSON] = field(default_factory=dict)
    note: str = ""  # how it was obtained (plain-JS comparison, Python problems, ...)

    def key(self) -> tuple[Any, ...]:
        meta = () if self.error_code else canon(dict(self.metadata))
        value = _MISSING if self.value is _MISSING else canon(self.value)
        return (self.reason, self.error_code, self.variant, value, meta)

    def brief(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"reason": self.reason}
        if self.error_code:
            out["errorCode"] = self.error_code
        if self.variant is not None:
            out["variant"] = self.variant
        if self.value is not _MISSING:
            out["value"] = self.value
        if self.metadata and not self.error_code:
            out["metadata"] = dict(self.metadata)
        if self.note:
            out["note"] = self.note
        return out

    def kind(self) -> str:
        return self.reason + (f"/{self.error_code}" if self.error_code else "")


def js_outcome(res: Mapping[str, JSON]) -> tuple[Outcome, bool]:
    """The reference's outcome; the second item tells whether the plain-JS-comparison
    re-evaluation was used (the reference threw, DESIGN §2 says follow plain JS)."""
    used_alt = False
    if res.get("threw"):
        alt = res["alt"]
        if not alt.get("threw"):
            used_alt = True
            res = {**alt, "note": "reference threw; plain-JS comparison result"}
    return (
        Outcome(
            reason=res["reason"],
            variant=res.get("variant"),
            value=res.get("value", _MISSING),
            error_code=res.get("errorCode"),
            metadata=res.get("metadata") or {},
            note=res.get("note", ""),
        ),
        used_alt,
    )


def py_outcome(result: Any) -> Outcome:
    return Outcome(
        reason=str(result.reason.value if hasattr(result.reason, "value") else result.reason),
        variant=result.variant,
        value=result.value if result.has_value else _MISSING,
        error_code=result.error_code.value if result.error_code is not None else None,
        metadata=dict(result.metadata),
    )


_FLAG_PATH = re.compile(r"^flags\.([^.\[]+)")
_EVALUATOR_PATH = re.compile(r"^\$evaluators\.([^.\[]+)")


@dataclass
class PyDoc:
    """A document compiled by flagedge; flags it refused at load answer PARSE_ERROR.

    flagedge refuses a whole document when any flag or evaluator is invalid (DESIGN §2: an
    invalid document changes nothing); the reference fails only the flags whose targeting it
    cannot compile. To compare flag by flag, the flags (and evaluators) with problems are cut
    out and the rest is compiled again; a flag using a refused evaluator is refused too.
    ``unused_bad_evaluators`` names refused evaluators that no flag uses (the reference never
    compiles those)."""

    flag_set: Any
    rejected: dict[str, list[str]]
    unused_bad_evaluators: list[str] = field(default_factory=list)


def _refs(node: JSON) -> set[str]:
    text = orjson.dumps(node).decode()
    return set(re.findall(r'\{"\$ref":"([^"]*)"\}', text))


def compile_py(doc: Mapping[str, JSON], compile_document: Callable[..., Any]) -> PyDoc:
    doc = orjson.loads(orjson.dumps(doc))  # as parsed from JSON: no shared objects
    flags = doc.get("flags", {})
    evaluators = dict(doc.get("$evaluators") or {})
    rejected: dict[str, list[str]] = {}
    bad_evals: dict[str, list[str]] = {}
    for _ in range(4):  # each pass removes what the previous one reported
        rest_flags = {k: v for k, v in flags.items() if k not in rejected}
        rest = {**doc, "flags": rest_flags}
        if "$evaluators" in doc:
            rest["$evaluators"] = {k: v for k, v in evaluators.items() if k not in bad_evals}
        try:
            flag_set = compile_document(rest)
        except InvalidDocument as exc:
            if not exc.problems:
                return PyDoc(None, {k: ["InvalidDocument without problems"] for k in flags})
            progress = False
            for p in exc.problems:
                m = _FLAG_PATH.match(p.path)
                e = _EVALUATOR_PATH.match(p.path)
                if m and m.group(1) in rest_flags:
                    rejected.setdefault(m.group(1), []).append(str(p))
                    progress = True
                elif e and e.group(1) in evaluators:
                    bad_evals.setdefault(e.group(1), []).append(str(p))
                    progress = True
                else:
                    return PyDoc(None, {k: [str(p)] for k in flags})
            # evaluators and flags that use a refused evaluator are refused with it
            changed = True
            while changed:
                changed = False
                for name, body in evaluators.items():
                    if name not in bad_evals and _refs(body) & set(bad_evals):
                        bad_evals[name] = ["uses a refused evaluator"]
                        changed = True
            for key, flag in flags.items():
                used = _refs(flag.get("targeting")) & set(bad_evals)
                if key not in rejected and used:
                    rejected[key] = [q for name in sorted(used) for q in bad_evals[name]]
            if not progress:
                break
            continue
        except Exception as exc:  # compile_document must only raise InvalidDocument
            return PyDoc(None, {k: [f"compile_document raised {type(exc).__name__}: {exc}"]
                                for k in flags})
        used_anywhere = set().union(*(_refs(f.get("targeting")) for f in flags.values()), set())
        unused = sorted(n for n in bad_evals if n not in used_anywhere
                        and not any(n in _refs(evaluators[u]) for u in used_anywhere
                                    if u in evaluators))
        return PyDoc(flag_set, rejected, unused)
    return PyDoc(None, {k: rejected.get(k, ["document refused"]) for k in flags})


def evaluate_py(pydoc: PyDoc, key: str, context: Mapping[str, JSON],
                evaluate: Callable[..., Any]) -> Outcome:
    if key in pydoc.rejected:
        return Outcome("ERROR", error_code="PARSE_ERROR",
                       note="refused at load: " + "; ".join(pydoc.rejected[key][:3]))
    if pydoc.flag_set is None:
        return Outcome("ERROR", error_code="PARSE_ERROR", note="document refused")
    # a request's context is parsed JSON: no object shared between two places (JS compares
    # objects by identity, and the reference got its own parse too)
    context = orjson.loads(orjson.dumps(context))
    try:
        return py_outcome(evaluate(pydoc.flag_set, key, context))
    except Exception as exc:  # evaluate must never raise: that is a mismatch too
        return Outcome("RAISED", note=f"{type(exc).__name__}: {exc}")


@dataclass
class Mismatch:
    doc: Mapping[str, JSON]
    key: str
    context: Mapping[str, JSON]
    js: Outcome
    py: Outcome
    js_raw: Mapping[str, JSON]

    def signature(self) -> str:
        return f"reference {self.js.kind()} vs flagedge {self.py.kind()}"

    def repro_doc(self) -> dict[str, JSON]:
        return minimal_doc(self.doc, self.key)

    def render(self) -> str:
        return (
            f"flag document: {orjson.dumps(self.repro_doc()).decode()}\n"
            f"  key: {self.key!r}\n"
            f"  context: {orjson.dumps(self.context).decode()}\n"
            f"  reference (flagd-core 4.0.1): {orjson.dumps(self.js.brief()).decode()}\n"
            f"  flagedge: {orjson.dumps(self.py.brief()).decode()}"
        )


def minimal_doc(doc: Mapping[str, JSON], key: str) -> dict[str, JSON]:
    """The document cut down to one flag and the evaluators it (transitively) uses."""
    flags = doc.get("flags", {})
    out: dict[str, JSON] = {"flags": {key: flags[key]} if key in flags else {}}
    evaluators = doc.get("$evaluators") or {}
    used: dict[str, JSON] = {}
    todo = [flags.get(key, {}).get("targeting")]
    while todo:
        text = orjson.dumps(todo.pop()).decode()
        for name in evaluators:
            if name not in used and f'{{"$ref":"{name}"}}' in text:
                used[name] = evaluators[name]
                todo.append(evaluators[name])
    if used:
        out["$evaluators"] = {k: evaluators[k] for k in evaluators if k in used}
    if doc.get("metadata"):
        out["metadata"] = doc["metadata"]
    return out


@dataclass
class Report:
    flags: int = 0
    cases: int = 0
    compared: int = 0
    plain_js: int = 0  # reference threw on a comparison: compared with plain-JS result
    js_threw: int = 0
    unused_bad_evaluators: int = 0  # docs flagedge refuses for an evaluator no flag uses
    refused_both: int = 0  # flag refused at load by flagedge, uncompilable in the reference
    refused_always_error: int = 0  # refused by flagedge: its rule always names no variant
    outcomes: Counter[str] = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)

    def by_signature(self) -> dict[str, list[Mismatch]]:
        groups: dict[str, list[Mismatch]] = {}
        for m in self.mismatches:
            groups.setdefault(m.signature(), []).append(m)
        return groups

    def render(self, examples: int = 2,
               shrink: Callable[[Mismatch], Mismatch] | None = None, shrink_groups: int = 8) -> str:
        """Mismatches grouped by kind, biggest group first, smallest repros first; with
        ``shrink``, the first repro of the first ``shrink_groups`` groups is minimised."""
        lines = [
            f"{len(self.mismatches)} of {self.compared} cases differ from flagd-core 4.0.1 "
            f"({self.flags} flags):"
        ]
        groups = sorted(self.by_signature().items(), key=lambda kv: -len(kv[1]))
        for n, (sig, items) in enumerate(groups):
            lines.append(f"\n== {sig}: {len(items)} cases")
            smallest = sorted(items, key=lambda m: len(orjson.dumps(m.repro_doc())))
            for i, m in enumerate(smallest[:examples]):
                if shrink is not None and i == 0 and n < shrink_groups:
                    lines.append("minimised: " + shrink(m).render())
                lines.append(m.render())
        return "\n".join(lines)


def classify(res: Mapping[str, JSON], js: Outcome, key: str, pydoc: PyDoc, py: Outcome) -> str:
    """``same``, ``mismatch``, or a tolerated load-time policy difference (README)."""
    if key in pydoc.rejected:
        # flagedge refused the flag at load: right when the reference cannot compile its
        # targeting either (whatever the state: DISABLED hides it there)
        if res.get("targetingInvalid"):
            return "refused_both"
        # a rule that always names no variant: flagedge refuses it at load, the reference
        # errs (GENERAL) on every evaluation
        if "always returns" in py.note and js.kind() in ("ERROR/GENERAL", "DISABLED"):
            return "refused_always_error"
    return "same" if js.key() == py.key() else "mismatch"


def compare_docs(
    docs: list[tuple[Mapping[str, JSON], list[tuple[str, Mapping[str, JSON]]]]],
    replies: list[Mapping[str, JSON]],
    compile_document: Callable[..., Any],
    evaluate: Callable[..., Any],
) -> Report:
    report = Report()
    for (doc, cases), reply in zip(docs, replies, strict=True):
        report.flags += len(doc.get("flags", {}))
        if "load_error" in reply:
            raise AssertionError(
                f"the reference refused a generated document ({reply['load_error']}): "
                f"{orjson.dumps(doc).decode()}"
            )
        pydoc = compile_py(doc, compile_document)
        report.unused_bad_evaluators += bool(pydoc.unused_bad_evaluators)
        for (key, context), res in zip(cases, reply["results"], strict=True):
            report.cases += 1
            js, used_alt = js_outcome(res)
            report.js_threw += bool(res.get("threw"))
            report.plain_js += used_alt
            py = evaluate_py(pydoc, key, context, evaluate)
            report.compared += 1
            report.outcomes[js.kind()] += 1
            verdict = classify(res, js, key, pydoc, py)
            if verdict == "refused_both":
                report.refused_both += 1
            elif verdict == "refused_always_error":
                report.refused_always_error += 1
            elif verdict == "mismatch":
                report.mismatches.append(Mismatch(doc, key, context, js, py, res))
    return report
