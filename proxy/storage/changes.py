"""The one change-entry format in Redis (DESIGN §3): parse an entry of
``flagedge:{ENV}:changes`` into a :class:`~proxy.model.ChangeRecord`, and undo one with its
``before`` side.

Every reader of the change log goes through here: the Redis source following changes, the
streams' resume (replaying missed versions) and the write side's
history and rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.model import JSON, ChangeRecord
from proxy.storage.replies import text


def _json_object(value: Any) -> Mapping[str, JSON] | None:
    try:
        parsed = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        return None  # another tool stored JSON that does not parse
    return parsed if isinstance(parsed, dict) else None


def _number(value: Any, kind: type[int] | type[float], default: int | float | None) -> Any:
    try:
        return kind(text(value)) if value not in (None, b"", "") else default
    except ValueError:
        return default


def parse(entry_id: Any, fields: Mapping[Any, Any]) -> ChangeRecord:
    """One stream entry (its id and its field map, bytes or str). Never raises: what does
    not parse is marked (version -1, before/after None) for the caller to decide."""
    f = {text(k): v for k, v in fields.items()}
    return ChangeRecord(
        id=text(entry_id), version=_number(f.get("version"), int, -1),
        epoch=text(f.get("epoch") or ""), op=text(f.get("op") or ""),
        at=_number(f.get("at"), float, 0.0), author=text(f.get("author") or ""),
        message=text(f.get("message") or ""), before=_json_object(f.get("before")),
        after=_json_object(f.get("after")),
        request=_number(f.get("request"), int, None), approvers=_names(f.get("approvers")),
        kill=_flag(f.get("kill")), break_glass=_flag(f.get("break_glass")),
        applied_by=text(f.get("applied_by") or ""),
    )


def _names(value: Any) -> tuple[str, ...]:
    """The ``approvers`` field (a JSON list of names); unreadable reads as none."""
    try:
        names = orjson.loads(value) if value else []
    except orjson.JSONDecodeError:
        return ()
    return tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()


def _flag(value: Any) -> bool:
    return text(value or "") == "1"


def undo(document: Mapping[str, JSON], before: Mapping[str, JSON]) -> dict[str, JSON]:
    """A flagd document (``flags``, ``$evaluators``, ``metadata``) as it was before the write
    whose ``before`` side is given: flags it touched get their old value back (null: the
    flag did not exist), evaluators and metadata their old complete maps when it changed
    them. The input is not modified."""
    flags = dict(document.get("flags") or {})
    for key, raw in (before.get("flags") or {}).items():
        if raw is None:
            flags.pop(key, None)
        else:
            flags[key] = raw
    out = {"flags": flags, "$evaluators": dict(document.get("$evaluators") or {}),
           "metadata": dict(document.get("metadata") or {})}
    for part in ("$evaluators", "metadata"):
        if part in before:
            out[part] = dict(before[part] or {})
    return out
