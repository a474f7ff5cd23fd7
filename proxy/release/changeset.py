"""What a push would change: the plan (pure data) and its readable description.

Flags are compared in canonical JSON (sorted keys, compact), so reformatting a file is not a
change, while ``1`` vs ``1.0`` vs ``true`` still are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.model import FractionalHash, canonical

JSONValue = Any


@dataclass(frozen=True, slots=True)
class Document:
    """A flag set split the way Redis stores it."""

    flags: Mapping[str, JSONValue]
    evaluators: Mapping[str, JSONValue] = field(default_factory=dict)
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    #: The hashing generation a file declares (``$fractionalHash``); None: it declares none.
    #: Not stored by a push: the environment's own setting (``envs set``) decides.
    fractional_hash: FractionalHash | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, JSONValue]) -> Document:
        declared = doc.get("$fractionalHash")
        return cls(
            flags=dict(doc.get("flags") or {}),
            evaluators=dict(doc.get("$evaluators") or {}),
            metadata=dict(doc.get("metadata") or {}),
            fractional_hash=None if declared is None else FractionalHash.parse(declared),
        )

    def to_json(self) -> dict[str, JSONValue]:
        doc: dict[str, JSONValue] = {"flags": dict(self.flags)}
        if self.evaluators:
            doc["$evaluators"] = dict(self.evaluators)
        if self.metadata:
            doc["metadata"] = dict(self.metadata)
        return doc


@dataclass(frozen=True, slots=True)
class Plan:
    """The difference between the stored state (``old``) and a document (``new``)."""

    added: dict[str, JSONValue]
    changed: dict[str, tuple[JSONValue, JSONValue]]
    removed: dict[str, JSONValue]
    evaluators: tuple[JSONValue, JSONValue] | None = None  # (old, new) when changed
    metadata: tuple[JSONValue, JSONValue] | None = None

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.evaluators
                    or self.metadata)

    @property
    def touched(self) -> list[str]:
        return sorted({*self.added, *self.changed, *self.removed})

    def upserts(self) -> dict[str, bytes]:
        out = {k: canonical(v) for k, v in self.added.items()}
        out.update({k: canonical(new) for k, (_, new) in self.changed.items()})
        return out

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "added": sorted(self.added),
            "changed": {k: flag_changes(o, n) for k, (o, n) in sorted(self.changed.items())},
            "removed": sorted(self.removed),
            "evaluators_changed": sorted(_changed_names(*self.evaluators))
            if self.evaluators else [],
            "metadata_changed": self.metadata is not None,
        }


def make_plan(old: Document, new: Document) -> Plan:
    added, changed, removed = {}, {}, {}
    for key, flag in new.flags.items():
        if key not in old.flags:
            added[key] = flag
        elif canonical(old.flags[key]) != canonical(flag):
            changed[key] = (old.flags[key], flag)
    for key, flag in old.flags.items():
        if key not in new.flags:
            removed[key] = flag
    evaluators = None
    if canonical(dict(old.evaluators)) != canonical(dict(new.evaluators)):
        evaluators = (dict(old.evaluators), dict(new.evaluators))
    metadata = None
    if canonical(dict(old.metadata)) != canonical(dict(new.metadata)):
        metadata = (dict(old.metadata), dict(new.metadata))
    return Plan(added, changed, removed, evaluators, metadata)


def _short(value: JSONValue, limit: int = 60) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _changed_names(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    return {k for k in {*old, *new}
            if k not in old or k not in new or canonical(old[k]) != canonical(new[k])}


def flag_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human lines saying what changed inside one flag."""
    lines: list[str] = []
    if old.get("state") != new.get("state"):
        lines.append(f"state: {old.get('state')} -> {new.get('state')}")
    if old.get("defaultVariant") != new.get("defaultVariant") or (
            "defaultVariant" in old) != ("defaultVariant" in new):
        lines.append(f"defaultVariant: {_short(old.get('defaultVariant'))} -> "
                     f"{_short(new.get('defaultVariant'))}")
    ov, nv = old.get("variants") or {}, new.get("variants") or {}
    if isinstance(ov, dict) and isinstance(nv, dict):
        for name in sorted({*ov, *nv}):
            if name not in ov:
                lines.append(f"variant {name} added: {_short(nv[name])}")
            elif name not in nv:
                lines.append(f"variant {name} removed (was {_short(ov[name])})")
            elif canonical(ov[name]) != canonical(nv[name]):
                lines.append(f"variant {name}: {_short(ov[name])} -> {_short(nv[name])}")
    elif canonical(ov) != canonical(nv):
        lines.append("variants changed")
    ot, nt = old.get("targeting") or {}, new.get("targeting") or {}
    if canonical(ot) != canonical(nt):
        if not ot:
            lines.append(f"targeting added: {_short(nt)}")
        elif not nt:
            lines.append("targeting removed")
        else:
            lines.append(f"targeting: {_short(ot)} -> {_short(nt)}")
    if canonical(old.get("metadata") or {}) != canonical(new.get("metadata") or {}):
        lines.append(f"metadata: {_short(old.get('metadata') or {})} -> "
                     f"{_short(new.get('metadata') or {})}")
    known = {"state", "defaultVariant", "variants", "targeting", "metadata"}
    for k in sorted({*old, *new} - known):
        if canonical(old.get(k)) != canonical(new.get(k)):
            lines.append(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}")
    return lines


def describe(plan: Plan, env: str) -> list[str]:
    """The diff as people read it: one block per flag, + added, ~ changed, - removed."""
    if plan.empty:
        return [f"no changes for environment {env}"]
    out: list[str] = []
    for key in sorted(plan.added):
        flag = plan.added[key]
        out.append(f"+ {key} (added: {flag.get('state')}, default "
                   f"{_short(flag.get('defaultVariant'))}, variants "
                   f"{', '.join(sorted(flag.get('variants') or {}))})")
    for key in sorted(plan.changed):
        out.append(f"~ {key}")
        out.extend(f"    {line}" for line in flag_changes(*plan.changed[key]))
    for key in sorted(plan.removed):
        out.append(f"- {key} (removed)")
    if plan.evaluators:
        names = ", ".join(sorted(_changed_names(*plan.evaluators)))
        out.append(f"~ $evaluators: {names}")
    if plan.metadata:
        out.append(f"~ metadata: {_short(plan.metadata[0])} -> {_short(plan.metadata[1])}")
    n = len(plan.added), len(plan.changed), len(plan.removed)
    out.append(f"{n[0]} added, {n[1]} changed, {n[2]} removed")
    return out
