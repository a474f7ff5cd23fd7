"""Build flag-set snapshots from stored JSON, one flag at a time.

Sources receive raw JSON that another tool may have written: a flag that does not parse or
compile is rejected alone (its last good version stays; a flag without one answers the error
flagd gives for it at evaluation time; the problem is logged with env/flag/path, counted and
kept in the snapshot's ``rejected``), so one bad write never takes a whole environment down.
Unchanged flags keep their compiled objects, so a resync recompiles nothing it need not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.evaluation.documents import apply_after, flag_set, validate_evaluators
from proxy.evaluation.flags import compile_flag_tolerantly, error_flag, keep_results
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    Change,
    Flag,
    FlagSet,
    FractionalHash,
    Problem,
    canonical,
)

log = logging.getLogger("flagedge.sources")


@dataclass(slots=True)
class Rejections:
    """Problems found while building one snapshot (each is logged once, by ``report``)."""

    env: str
    problems: list[tuple[str, Problem]] = field(default_factory=list)  # (flag or "", problem)

    def add(self, flag: str, problems: list[Problem]) -> None:
        self.problems.extend((flag, p) for p in problems)

    @property
    def count(self) -> int:
        return len({flag for flag, _ in self.problems})

    def report(self, version: int) -> None:
        for flag, p in self.problems:
            log.error("rejected env=%s version=%d flag=%s path=%s problem=%s",
                      self.env, version, flag or "-", p.path or "-", p.message)


def _parse(raw: Any, path: str) -> tuple[Any, list[Problem]]:
    if raw is None:
        return None, []
    if not isinstance(raw, bytes | str):
        return raw, []
    try:
        return orjson.loads(raw), []
    except orjson.JSONDecodeError as exc:
        return None, [Problem(path, f"invalid JSON: {exc}")]


def _evaluators(raw: Any, previous: Mapping[str, Any], rej: Rejections) -> Mapping[str, Any]:
    value, problems = _parse(raw, "$evaluators")
    if value is None and not problems:
        return {}
    if not problems and not isinstance(value, dict):
        problems = [Problem("$evaluators", "must be an object")]
    if not problems:
        problems = validate_evaluators(value)
    if problems:
        rej.add("", problems)
        return previous
    return value


def _metadata(raw: Any, previous: Mapping[str, Any], rej: Rejections) -> Mapping[str, Any]:
    value, problems = _parse(raw, "metadata")
    if value is None and not problems:
        return {}
    if not problems and (not isinstance(value, dict) or not all(
            isinstance(v, str | int | float | bool) for v in value.values())):
        problems = [Problem("metadata", "must be an object of string, number or bool values")]
    if problems:
        rej.add("", problems)
        return previous
    return value


def _fractional_hash(raw: Any, previous: FractionalHash, rej: Rejections) -> FractionalHash:
    """The stored ``fractional_hash`` (meta field or change entry): unset is v2; a value this
    code does not know keeps the previous generation and is reported."""
    if raw is None or raw == "":
        return DEFAULT_FRACTIONAL_HASH
    try:
        return FractionalHash.parse(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        rej.add("", [Problem("fractional_hash", str(exc))])
        return previous


def _compile(key: str, raw: Any, evaluators: Mapping[str, Any], metadata: Mapping[str, Any],
             fallback: Flag | None, rej: Rejections,
             fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH) -> Flag | None:
    """The flag to serve for a stored definition: compiled when valid (warnings only: served
    as flagd evaluates it); when invalid, its last good version if one was served, else the
    error flagd gives for it at evaluation time. Problems go to ``rej``."""
    value, problems = _parse(raw, f"flags.{key}")
    flag = None
    if not problems:
        try:
            flag, found = compile_flag_tolerantly(key, value, evaluators, metadata,
                                                  fractional_hash)
        except Exception as exc:  # a compiler bug must not stop the source
            problems = [Problem(f"flags.{key}", f"cannot compile: {exc!r}")]
        else:
            problems = [p for p in found if not p.warning]
            for p in found:
                if p.warning:
                    log.warning("flag env=%s flag=%s path=%s: %s (served as flagd evaluates it)",
                                rej.env, key, p.path, p.message)
            if not problems:
                return keep_results(flag, fallback)
    rej.add(key, problems)
    if fallback is not None and not fallback.problems:
        return fallback
    return flag if flag is not None else error_flag(key, value, problems, metadata)


def _rejected(rej: Rejections) -> dict[str, tuple[Problem, ...]]:
    out: dict[str, list[Problem]] = {}
    for flag, p in rej.problems:
        out.setdefault(flag, []).append(p)
    return {k: tuple(v) for k, v in out.items()}


def build_full(env: str, raw_flags: Mapping[str, Any], meta: Mapping[str, str],
               previous: FlagSet | None, written_at: float | None = None,
               revision: str = "") -> tuple[FlagSet, Change, Rejections]:
    """A complete snapshot from stored state (HGETALL flags + meta). Flags equal to the
    previous snapshot's (same JSON, same evaluators and metadata) are reused as they are.
    ``written_at`` is the write that triggered the reload, if one did (a reload on connect
    has none: the stored ``updated_at`` may be hours old and is no propagation time).
    ``revision``: the snapshot's (the newest change entry's id; "" for other sources)."""
    rej = Rejections(env)
    prev_flags: Mapping[str, Flag] = previous.flags if previous else {}
    evaluators = _evaluators(meta.get("evaluators"), previous.evaluators if previous else {},
                             rej)
    metadata = _metadata(meta.get("metadata"), previous.metadata if previous else {}, rej)
    generation = _fractional_hash(meta.get("fractional_hash"), previous.fractional_hash
                                  if previous else DEFAULT_FRACTIONAL_HASH, rej)
    same_context = previous is not None and canonical(dict(previous.evaluators)) == canonical(
        dict(evaluators)) and canonical(dict(previous.metadata)) == canonical(dict(metadata))
    rehash = previous is not None and previous.fractional_hash is not generation
    flags: dict[str, Flag] = {}
    upserted: set[str] = set()
    for key, raw in raw_flags.items():
        old = prev_flags.get(key)
        if same_context and old is not None and not (rehash and old.fractional) and _same_raw(
                old, raw):
            flags[key] = old
            if old.problems:  # still the same invalid definition: still rejected
                rej.add(key, [p for p in old.problems if not p.warning])
            continue
        flag = _compile(key, raw, evaluators, metadata, old, rej, generation)
        if flag is not None:
            flags[key] = flag
            if flag is not old:
                upserted.add(key)
    version = int(meta.get("version", 0))
    fs = flag_set(flags, evaluators, metadata, version=version, epoch=meta.get("epoch", ""),
                  updated_at=float(meta.get("updated_at", 0) or 0), rejected=_rejected(rej),
                  fractional_hash=generation, revision=revision)
    change = Change(
        env=env, version=version, upserted=frozenset(upserted),
        deleted=frozenset(k for k in prev_flags if k not in flags),
        evaluators_changed=previous is None or canonical(dict(previous.evaluators))
        != canonical(dict(evaluators)),
        metadata_changed=previous is None or canonical(dict(previous.metadata))
        != canonical(dict(metadata)),
        reset=True, written_at=written_at,
    )
    return fs, change, rej


def _same_raw(flag: Flag, raw: Any) -> bool:
    try:
        value = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
    except orjson.JSONDecodeError:
        return False
    return canonical(dict(flag.raw)) == canonical(value)


def apply_change(current: FlagSet, env: str, version: int, after: Mapping[str, Any],
                 written_at: float | None, revision: str = ""
                 ) -> tuple[FlagSet, Change, Rejections]:
    """Apply one change entry's ``after`` ({"flags": {key: flag | null}, "$evaluators"?,
    "metadata"?}) to the current snapshot. An invalid flag, evaluators or metadata keeps its
    last good version and is reported. ``revision``: the new snapshot's (the Redis entry
    id; "" for other sources)."""
    rej = Rejections(env)
    evaluators, metadata = current.evaluators, current.metadata
    if "$evaluators" in after:
        evaluators = _evaluators(after["$evaluators"], current.evaluators, rej)
    if "metadata" in after:
        metadata = _metadata(after["metadata"], current.metadata, rej)
    generation = current.fractional_hash
    if "fractional_hash" in after:
        generation = _fractional_hash(after["fractional_hash"], generation, rej)

    def compile_or_keep(key: str, raw: Any, evaluators: Mapping[str, Any],
                        metadata: Mapping[str, Any], replaced: Flag | None,
                        fractional_hash: FractionalHash) -> Flag | None:
        return _compile(key, raw, evaluators, metadata, replaced, rej, fractional_hash)

    applied = apply_after(current, after.get("flags") or {}, evaluators, metadata,
                          version=version, epoch=current.epoch,
                          updated_at=written_at or current.updated_at,
                          compile_one=compile_or_keep, fractional_hash=generation)
    # A new hashing generation re-buckets users of every fractional flag: a reset, so streams
    # send whole states (a rules ``put`` carries the generation; a ``patch`` cannot).
    change = Change(env=env, version=version, upserted=applied.upserted,
                    deleted=applied.deleted, evaluators_changed=bool(applied.evaluators_changed),
                    metadata_changed=applied.metadata_changed, written_at=written_at,
                    reset=generation is not current.fractional_hash)
    # Rejections still standing: the previous ones this change did not touch, plus its own.
    now = _rejected(rej)
    settled = applied.upserted | applied.deleted
    for key, problems in current.rejected.items():
        if key in now or key in settled or (not key and ("$evaluators" in after
                                                         or "metadata" in after)):
            continue
        now[key] = problems
    fs = dataclasses.replace(applied.flag_set, rejected=now, revision=revision)
    return fs, change, rej
