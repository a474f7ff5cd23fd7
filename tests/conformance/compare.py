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


@dataclass
class PyDoc:
    """A document compiled by flagedge; flags it refused at load answer PARSE_ERROR."""

    flag_set: Any
    rejected: dict[str, list[str]]


def compile_py(doc: Mapping[str, JSON], compile_document: Callable[..., Any]) -> PyDoc:
    try:
        return PyDoc(compile_document(doc), {})
    except InvalidDocument as exc:
        rejected: dict[str, list[str]] = {}
        whole = []
        for p in exc.problems:
            m = _FLAG_PATH.match(p.path)
            if m and m.group(1) in doc.get("flags", {}):
                rejected.setdefault(m.group(1), []).append(str(p))
            else:
                whole.append(str(p))
        if whole or not rejected:
            return PyDoc(None, {k: whole or ["document refused"] for k in doc.get("flags", {})})
        rest = {**doc, "flags": {k: v for k, v in doc["flags"].items() if k not in rejected}}
        try:
            return PyDoc(compile_document(rest), rejected)
        except InvalidDocument as exc2:
            problems = [str(p) for p in exc2.problems]
            return PyDoc(None, {k: rejected.get(k, problems) for k in doc["flags"]})


def evaluate_py(pydoc: PyDoc, key: str, context: Mapping[str, JSON],
                evaluate: Callable[..., Any]) -> Outcome:
    if key in pydoc.rejected:
        return Outcome("ERROR", error_code="PARSE_ERROR",
                       note="refused at load: " + "; ".join(pydoc.rejected[key][:3]))
    if pydoc.flag_set is None:
        return Outcome("ERROR", error_code="PARSE_ERROR", note="document refused")
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
        for (key, context), res in zip(cases, reply["results"], strict=True):
            report.cases += 1
            js, used_alt = js_outcome(res)
            report.js_threw += bool(res.get("threw"))
            report.plain_js += used_alt
            py = evaluate_py(pydoc, key, context, evaluate)
            report.compared += 1
            report.outcomes[js.kind()] += 1
            if js.key() != py.key():
                report.mismatches.append(Mismatch(doc, key, context, js, py, res))
    return report
