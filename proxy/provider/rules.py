"""The provider's copy of one environment's rules, kept up to date by rules-stream events.

Pure state, no network: :meth:`RulesState.apply` takes one SSE event (``put`` / ``patch`` /
``delete``, its JSON data and its ``id``) and swaps in a new immutable :class:`FlagSet`,
compiling only the flags the event touched. It reports which flag keys changed, for the
provider's CONFIGURATION_CHANGED event, and remembers the id to resume from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from proxy.evaluation.documents import (
    apply_after,
    compile_document,
    compile_flag_served,
    flag_set,
)
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    FlagSet,
    FractionalHash,
    InvalidDocument,
    id_version,
)


class StreamPayloadError(ValueError):
    """An event we cannot apply; the copy may now be behind, so the caller resyncs."""

    def __init__(self, event: str, message: str):
        self.event = event
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Applied:
    event: str
    version: int
    flags_changed: tuple[str, ...]  # sorted
    first: bool  # the first rules this state has seen


class RulesState:
    def __init__(self) -> None:
        self.flag_set: FlagSet | None = None
        self.last_event_id: str | None = None  # sent as Last-Event-ID on reconnect
        # Keys changed by an event that is only part of a version (a ``delete`` sent without
        # an ``id:`` line because a ``patch`` of the same version follows): announced with it.
        self._pending: set[str] = set()

    def apply(self, event: str, data: str, event_id: str | None) -> Applied | None:
        """Apply one event; ``event_id`` is the stream's last event id as the SSE parser
        reports it (it persists across events that carry no ``id:`` line). Returns None when
        nothing is to be announced yet (unknown types, id-only frames, a repeated version, the
        first half of a version). Raises :class:`StreamPayloadError` on bad data."""
        if event not in ("put", "patch", "delete"):
            if event_id and not data:
                self.last_event_id = event_id  # an id-only frame moves the resume point
            return None
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StreamPayloadError(event, f"data is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise StreamPayloadError(event, "data is not a JSON object")
        version = _version(event, payload, event_id)
        old = self.flag_set
        if event != "put" and old is None:
            raise StreamPayloadError(event, f"{event} before any put")
        if event != "put" and old is not None and version <= old.version:
            return None  # already applied (a replay overlapping what we had)
        # A ``delete`` followed by a ``patch`` of the same version comes without an id (the
        # SSE parser then repeats the previous one): only an id of this version completes it.
        complete = event == "put" or id_version(event_id) == version
        try:
            if event == "put":
                new = _put(payload, version)
            elif event == "patch":
                assert old is not None
                new = _patch(old, payload, version)
            else:
                assert old is not None
                new = _delete(old, payload, version)
        except InvalidDocument as exc:
            raise StreamPayloadError(event, str(exc)) from exc
        changed = changed_flags(old, new) if old is not None else set(new.flags)
        if not complete:
            # Keep the old version until the rest of this version arrives, so it is not
            # taken for a duplicate; a replay of this half is harmless (idempotent).
            assert old is not None
            self.flag_set = _with_version(new, old.version)
            self._pending |= changed
            return None
        self.flag_set = new
        self.last_event_id = event_id if event_id else str(version)
        changed |= self._pending
        self._pending = set()
        return Applied(event=event, version=new.version, flags_changed=tuple(sorted(changed)),
                       first=old is None)


def changed_flags(old: FlagSet, new: FlagSet) -> set[str]:
    """Keys whose evaluation may differ: added, removed, or a different definition, merged
    metadata or referenced ``$evaluators`` body."""
    changed = set(old.flags.keys() ^ new.flags.keys())
    rehashed = old.fractional_hash is not new.fractional_hash
    for key in old.flags.keys() & new.flags.keys():
        a, b = old.flags[key], new.flags[key]
        if (rehashed and b.fractional) or a.raw != b.raw or a.metadata != b.metadata or any(old.evaluators.get(r) != new.evaluators.get(r) for r in a.refs | b.refs):
            changed.add(key)
    return changed


def _version(event: str, payload: Mapping[str, Any], event_id: str | None) -> int:
    raw = payload.get("version")
    try:
        return int(raw) if raw is not None else _id_version(event, event_id)
    except (TypeError, ValueError):
        raise StreamPayloadError(event, f"no usable version (id {event_id!r})") from None


def _id_version(event: str, event_id: str | None) -> int:
    version = id_version(event_id)
    if version is None:
        raise StreamPayloadError(event, f"no usable version (id {event_id!r})")
    return version


def _document(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    doc = payload.get("document", payload)
    if not isinstance(doc, Mapping):
        raise StreamPayloadError("put", "document is not a JSON object")
    return doc


def _fractional_hash(event: str, payload: Mapping[str, Any],
                     default: FractionalHash) -> FractionalHash:
    """The environment's hashing generation, sent beside the document (DESIGN §9); a server
    that sends none hashes v2."""
    raw = payload.get("fractional_hash")
    if raw is None:
        return default
    try:
        return FractionalHash.parse(raw)
    except ValueError as exc:  # a newer server's generation: evaluating it as v2 would lie
        raise StreamPayloadError(event, str(exc)) from None


def _put(payload: Mapping[str, Any], version: int) -> FlagSet:
    doc = _document(payload)
    # Tolerant, as flagedge serves it: a flag the server holds but cannot serve (an invalid
    # file, a foreign Redis write) answers its evaluation-time error here too.
    return compile_document(dict(doc), version=version, epoch=str(payload.get("epoch", "")),
                            updated_at=float(payload.get("updated_at", 0.0) or 0.0),
                            tolerant=True,
                            fractional_hash=_fractional_hash("put", payload,
                                                             DEFAULT_FRACTIONAL_HASH))


def _patch(old: FlagSet, payload: Mapping[str, Any], version: int) -> FlagSet:
    """``{"version", "flags": {key: raw flag}, "$evaluators"?: {...}, "metadata"?: {...}}``:
    the upserted flags, and the complete new evaluators / set metadata when they changed."""
    upserts = payload.get("flags") or {}
    if not isinstance(upserts, Mapping):
        raise StreamPayloadError("patch", "flags is not an object")
    evaluators: Mapping[str, Any] = old.evaluators
    if payload.get("$evaluators") is not None:
        evaluators = payload["$evaluators"]
        if not isinstance(evaluators, Mapping):
            raise StreamPayloadError("patch", "$evaluators is not an object")
    metadata: Mapping[str, Any] = old.metadata
    if payload.get("metadata") is not None:
        metadata = payload["metadata"]
        if not isinstance(metadata, Mapping):
            raise StreamPayloadError("patch", "metadata is not an object")
    return apply_after(old, upserts, evaluators, metadata, version=version,
                       epoch=str(payload.get("epoch", old.epoch)),
                       updated_at=_updated_at(old, payload),
                       compile_one=compile_flag_served,
                       fractional_hash=_fractional_hash("patch", payload,
                                                        old.fractional_hash)).flag_set


def _delete(old: FlagSet, payload: Mapping[str, Any], version: int) -> FlagSet:
    """``{"version", "flags": [key, ...]}``."""
    keys = payload.get("flags") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise StreamPayloadError("delete", "flags is not a list of keys")
    gone = set(keys)
    flags = {k: f for k, f in old.flags.items() if k not in gone}
    return flag_set(flags, old.evaluators, old.metadata, version=version,
                    epoch=str(payload.get("epoch", old.epoch)),
                    updated_at=_updated_at(old, payload), fractional_hash=old.fractional_hash)


def _with_version(fs: FlagSet, version: int) -> FlagSet:
    return replace(fs, version=version)


def _updated_at(old: FlagSet, payload: Mapping[str, Any]) -> float:
    return float(payload.get("updated_at", old.updated_at) or 0.0)
