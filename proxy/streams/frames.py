"""SSE wire frames for the three streams, built once per change and shared as bytes by every
connection that receives them (DESIGN §5), and the plain counters the streams keep."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Protocol

import orjson

from proxy.model import JSON, EvaluationResult, FlagSet
from proxy.streams.history import Entry


def frame(event: str | None, event_id: str | None, data: bytes | None) -> bytes:
    """One SSE event; ``event_id`` is a state id (:func:`proxy.model.state_id`)."""
    parts = []
    if event is not None:
        parts.append(b"event: " + event.encode())
    if event_id:  # an empty "id:" line would reset the client's Last-Event-ID
        parts.append(b"id: " + event_id.encode())
    if data is not None:
        parts.append(b"data: " + data)  # orjson output never contains a newline
    return b"\n".join(parts) + b"\n\n"


def notification(state_id: str, at: float) -> bytes:
    """OFREP's change notification; its etag (the state id) comes back as the re-fetch's
    ``flagConfigEtag``."""
    data = orjson.dumps({"type": "refetchEvaluation", "etag": state_id,
                         "lastModified": int(at)})
    return frame("message", state_id, data)


def rules_put(flag_set: FlagSet) -> bytes:
    """The whole state. ``fractional_hash`` (DESIGN §9) rides beside the flagd document, never
    in it; a change of it is always sent as a ``put`` (it is a reset)."""
    data = orjson.dumps({"version": flag_set.version, "epoch": flag_set.epoch,
                         "updated_at": flag_set.updated_at,
                         "fractional_hash": flag_set.fractional_hash.value,
                         "document": flag_set.to_document()})
    return frame("put", flag_set.state_id, data)


def rules_entry(entry: Entry) -> bytes:
    """A non-reset change as ``delete`` (no id: the ``patch`` after it carries the version,
    so a client cut off in between replays both) and/or ``patch``."""
    out = b""
    changed = entry.upserted or entry.evaluators is not None or entry.metadata is not None
    if entry.deleted:
        body = orjson.dumps({"version": entry.version, "flags": list(entry.deleted)})
        out += frame("delete", None if changed else entry.state_id, body)
    if changed or not entry.deleted:
        patch: dict[str, JSON] = {"version": entry.version, "updated_at": entry.at,
                                  "flags": dict(entry.upserted)}
        if entry.evaluators is not None:
            patch["$evaluators"] = dict(entry.evaluators)
        if entry.metadata is not None:
            patch["metadata"] = dict(entry.metadata)
        out += frame("patch", entry.state_id, orjson.dumps(patch))
    return out


PING = b": ping\n\n"  # the heartbeat: an SSE comment, which clients ignore


def id_only(state_id: str) -> bytes:
    """Moves the client's Last-Event-ID without dispatching an event (HTML SSE spec)."""
    return frame(None, state_id, None)


def diff_frames(held: dict[str, int], new: dict[str, bytes], keys: Iterable[str],
                state_id: str) -> bytes:
    """Evaluated stream: ``patch`` for each of ``keys`` whose OFREP item differs from what the
    client ``held`` (item hashes, updated in place), ``delete`` for those gone. Empty when
    nothing differs for this context."""
    changed: list[bytes] = []
    deleted: list[str] = []
    for k in sorted(keys):
        item = new.get(k)
        if item is None:
            if held.pop(k, None) is not None:
                deleted.append(k)
        elif held.get(k) != (fingerprint := hash(item)):
            held[k] = fingerprint
            changed.append(item)
    out = b""
    if deleted:
        out += frame("delete", None if changed else state_id, orjson.dumps({"flags": deleted}))
    if changed:
        out += frame("patch", state_id, b'{"flags":[' + b",".join(changed) + b"]}")
    return out


PROPAGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


Exposure = tuple[str, "str | None", str]  # flag, variant, reason ("ERROR" for an error)


def exposures_of(results: Iterable[EvaluationResult]) -> tuple[Exposure, ...]:
    return tuple((r.key, None, "ERROR") if r.error_code is not None
                 else (r.key, r.variant, r.reason.value) for r in results)


class Counters(Protocol):
    """Where streams count: open connections per stream, events per (stream, outcome).
    :class:`StreamStats`, or the API's hot metrics, which export them at scrape time."""

    sse_connections: dict[str, int]
    sse_events: dict[tuple[str, str], int]

    def count_exposures(self, env: str, exposures: tuple[Exposure, ...]) -> None:
        """Evaluations an evaluated stream delivered (insights, DESIGN §11)."""


class StreamStats:
    """Plain counters (no locks, no label lookups: 10,000 connections may each count an
    event per change). The API's metrics object can be passed instead; it has the same
    ``sse_connections`` / ``sse_events`` dicts and exports them at scrape time."""

    def __init__(self) -> None:
        self.sse_connections: dict[str, int] = {}
        self.sse_events: dict[tuple[str, str], int] = {}  # (stream, outcome) -> count
        self.exposures: dict[tuple[str, str, str | None, str], int] = {}

    def count_exposures(self, env: str, exposures: tuple[Exposure, ...]) -> None:
        for flag, variant, reason in exposures:
            key = (env, flag, variant, reason)
            self.exposures[key] = self.exposures.get(key, 0) + 1


class Propagation:
    """Source write -> event handed to the socket, per stream (bucket counts, not cumulative)."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, stream: str, seconds: float, events: int = 1) -> None:
        """``events`` events that each took ``seconds``."""
        counts = self.counts.get(stream)
        if counts is None:
            counts = self.counts[stream] = [0] * (len(PROPAGATION_BUCKETS) + 1)
            self.sums[stream] = 0.0
        counts[bisect.bisect_left(PROPAGATION_BUCKETS, seconds)] += events
        self.sums[stream] += seconds * events


def count(stats: Counters, stream: str, outcome: str, n: int = 1) -> None:
    key = (stream, outcome)
    stats.sse_events[key] = stats.sse_events.get(key, 0) + n

