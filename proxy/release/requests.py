"""A change request as DESIGN §10 defines it, without I/O: the record, its JSON, the change
(a diff against ``base_version``, in the change log's own ``before``/``after`` shape), its
content hash, and what it touches and reads.

The JSON object, stored in ``flagedge:{ENV}:requests`` and printed by ``requests show
--json``: ``{id, state, base_version, author, message, created_at, expires_at, apply_at?,
change, content_hash, preview, approvals [{by, at, content_hash}], applied_version?,
reason?}``; times are Unix seconds (as the change log's ``at``). ``change`` is
``{"before": {...}, "after": {...}}``, each side ``{"flags": {key: flag | null}}`` plus
``"$evaluators"`` / ``"metadata"`` (the complete maps) when the change sets them: exactly a
change entry's ``before`` and ``after``, so applying it and undoing it reuse
``storage/changes.py``. A third part, ``reads``, holds what the change depends on without
setting it, as it was at ``base_version``: the set ``metadata`` and the ``$evaluators`` its
flags reference; the apply script compares them (and the touched flags) with Redis to tell
a conflict, without needing the capped change log to reach back to ``base_version``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.model import JSON, canonical
from proxy.release.changeset import Document, Plan
from proxy.storage import changes

STATES = ("open", "applied", "rejected", "cancelled", "expired", "conflict")
DEFAULT_EXPIRY = 7 * 86400.0  # a request nobody approved in a week is stale


@dataclass(frozen=True, slots=True)
class Approval:
    by: str
    at: float
    content_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at, "content_hash": self.content_hash}


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    state: str
    base_version: int
    author: str
    message: str
    created_at: float
    expires_at: float
    change: Mapping[str, Any]
    content_hash: str
    preview: Mapping[str, Any]
    approvals: tuple[Approval, ...] = ()
    apply_at: float | None = None
    applied_version: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The §10 object, in a fixed key order (``id`` first: the create script writes it;
        the optional fields last: the apply script appends them)."""
        out: dict[str, Any] = {
            "id": self.id, "state": self.state, "base_version": self.base_version,
            "author": self.author, "message": self.message, "created_at": self.created_at,
            "expires_at": self.expires_at,
        }
        if self.apply_at is not None:
            out["apply_at"] = self.apply_at
        out.update(change=self.change, content_hash=self.content_hash, preview=self.preview,
                   approvals=[a.to_json() for a in self.approvals])
        if self.applied_version is not None:
            out["applied_version"] = self.applied_version
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json())

    def head(self) -> bytes:
        """The JSON without its closing brace: the apply script appends one last field."""
        return self.dumps()[:-1]

    def body_without_id(self) -> bytes:
        """The JSON after ``{"id":N,``: what the create script completes with the new id."""
        data = self.dumps()
        prefix = b'{"id":' + str(self.id).encode() + b","
        assert data.startswith(prefix)
        return data[len(prefix):]

    def replace(self, **fields: Any) -> Request:
        return dataclasses.replace(self, **fields)

    @property
    def approved_by(self) -> list[str]:
        return [a.by for a in self.approvals]

    def valid_approvers(self, approvers: Iterable[str] = ()) -> list[str]:
        """Distinct names whose approval counts: matching content hash, not the author, on
        the approvers' list when there is one (the apply script counts the same way)."""
        allowed = set(approvers)
        out: list[str] = []
        for a in self.approvals:
            if (a.content_hash == self.content_hash and a.by != self.author
                    and a.by not in out and (not allowed or a.by in allowed)):
                out.append(a.by)
        return out

    @classmethod
    def from_json(cls, data: bytes | Mapping[str, Any]) -> Request:
        """A stored request; raises ValueError when it is not one."""
        doc = orjson.loads(data) if isinstance(data, bytes | str) else data
        try:
            return cls(
                id=int(doc["id"]), state=str(doc["state"]), base_version=int(doc["base_version"]),
                author=str(doc["author"]), message=str(doc.get("message", "")),
                created_at=float(doc["created_at"]), expires_at=float(doc["expires_at"]),
                change=doc["change"], content_hash=str(doc["content_hash"]),
                preview=doc.get("preview") or {},
                approvals=tuple(Approval(str(a["by"]), float(a["at"]), str(a["content_hash"]))
                                for a in doc.get("approvals") or []),
                apply_at=_optional(doc.get("apply_at"), float),
                applied_version=_optional(doc.get("applied_version"), int),
                reason=_optional(doc.get("reason"), str),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a change request: {exc!r}") from None


def _optional(value: Any, kind: Any) -> Any:
    return None if value is None else kind(value)


def change_of(plan: Plan, base: Document) -> dict[str, Any]:
    """A plan against ``base`` as a change: the touched flags before (null: absent) and after
    (null: removed), the complete evaluators / metadata maps when the plan changes them, and
    what it reads at base (``reads``: see the module docstring)."""
    before: dict[str, Any] = {"flags": {}}
    after: dict[str, Any] = {"flags": {}}
    for key, flag in plan.added.items():
        before["flags"][key], after["flags"][key] = None, flag
    for key, (old, new) in plan.changed.items():
        before["flags"][key], after["flags"][key] = old, new
    for key, flag in plan.removed.items():
        before["flags"][key], after["flags"][key] = flag, None
    for name, pair in (("$evaluators", plan.evaluators), ("metadata", plan.metadata)):
        if pair is not None:
            before[name], after[name] = pair
    change: dict[str, Any] = {"before": before, "after": after}
    names = referenced_evaluators(change, base.evaluators)
    change["reads"] = {
        "$evaluators": {n: base.evaluators[n] for n in names if n in base.evaluators},
        "metadata": dict(base.metadata),
    }
    return change


def plan_of(change: Mapping[str, Any]) -> Plan:
    """The change back as a Plan (to describe it, preview it and write it)."""
    before, after = change["before"], change["after"]
    added, changed, removed = {}, {}, {}
    for key, new in after.get("flags", {}).items():
        old = before.get("flags", {}).get(key)
        if old is None and new is not None:
            added[key] = new
        elif new is None and old is not None:
            removed[key] = old
        elif old is not None:
            changed[key] = (old, new)
    pairs = {name: (before.get(name) or {}, after[name])
             for name in ("$evaluators", "metadata") if name in after}
    return Plan(added, changed, removed, pairs.get("$evaluators"), pairs.get("metadata"))


def applied_to(document: Document, change: Mapping[str, Any]) -> Document:
    """``document`` with the change's ``after`` side applied on top (``changes.undo``
    applies any side: it sets each named flag, and the maps the side carries)."""
    out = changes.undo(document.to_json(), change["after"])
    return Document(out["flags"], out["$evaluators"], out["metadata"])


def content_hash(env: str, base_version: int, change: Mapping[str, Any]) -> str:
    """What an approval approves: the environment, the base and the change, in canonical
    JSON (sha256). A request's content never changes, so neither does its hash; an
    approval carries the hash it saw, and only approvals of the same hash count."""
    body = canonical({"env": env, "base_version": base_version, "change": change})
    return "sha256:" + hashlib.sha256(body).hexdigest()


def referenced_evaluators(change: Mapping[str, Any],
                          evaluators: Mapping[str, Any]) -> list[str]:
    """Names of the ``$evaluators`` the change's flags use (before or after, through
    ``{"$ref": name}``, and through other evaluators' refs), sorted."""
    found: set[str] = set()
    pending = [flag for side in ("before", "after")
               for flag in change[side].get("flags", {}).values() if flag is not None]
    while pending:
        for name in _refs(pending.pop()):
            if name not in found:
                found.add(name)
                if name in evaluators:
                    pending.append(evaluators[name])
    return sorted(found)


def _refs(value: JSON) -> Iterable[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and len(item) == 1:
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
