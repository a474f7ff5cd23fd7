"""What a stream gets when it starts or has fallen behind: its environment's newest state in
one event (an id-carrying notification, a rules ``put``, an evaluated ``put``), and the
per-context evaluation that an evaluated ``put`` or resume diff is built from.

Its own module because two callers build these: the fan-out (a reader whose queue overflowed,
a reset change) and :mod:`proxy.streams.resume` (a new stream, a gap it cannot replay). With
the builders here, resume takes a :class:`Snapshots` as an argument and never needs the
fan-out, and both share one encoded rules ``put`` per flag set (10,000 streams that fell
behind together cost one encoding, not 10,000).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.evaluation.engine import evaluate_all as engine_evaluate_all
from proxy.model import EvaluationResult, Flag, FlagSet
from proxy.store import Store
from proxy.streams.connection import Connection, StreamKind
from proxy.streams.frames import Counters, exposures_of, frame, notification, rules_put

Evaluate = Callable[[FlagSet, str, dict[str, Any]], EvaluationResult]
EvaluateAll = Callable[[FlagSet, dict[str, Any]], list[EvaluationResult]]
# EvaluationResult -> one OFREP item (the API passes the bulk endpoint's shape)
Render = Callable[[EvaluationResult, Flag | None], dict[str, Any]]


def plain_render(result: EvaluationResult, _flag: Flag | None) -> dict[str, Any]:
    return result.to_ofrep()


# Encoded items a Snapshots keeps per generation (it holds one or two). A flag set's static
# flags and each targeting outcome are result objects shared by every context, so an
# environment of a few hundred flags has a few hundred or thousand of them.
RENDERED_BOUND = 4096


class _Rendered:
    """Encoded OFREP items by result object: ``id(result) -> (result, bytes)``. Holding the
    result keeps its id from being reused. Bounded by generations: when ``young`` fills it
    becomes ``old``, and what is found in ``old`` moves back, so an item nothing asks for is
    gone two generations later (results built per request, errors among them, pass through)."""

    __slots__ = ("old", "young")

    def __init__(self) -> None:
        self.young: dict[int, tuple[EvaluationResult, bytes]] = {}
        self.old: dict[int, tuple[EvaluationResult, bytes]] = {}

    def encoded(self, result: EvaluationResult, flag: Flag | None, render: Render) -> bytes:
        key = id(result)
        hit = self.young.get(key)
        if hit is not None:
            return hit[1]
        hit = self.old.get(key) or (result, orjson.dumps(render(result, flag)))
        if len(self.young) >= RENDERED_BOUND:
            self.old, self.young = self.young, {}
        self.young[key] = hit
        return hit[1]


class Snapshots:
    """The newest state of an environment, per stream kind, for one connection."""

    def __init__(self, store: Store, render: Render = plain_render,
                 evaluate_all: EvaluateAll = engine_evaluate_all,
                 stats: Counters | None = None):
        self.store = store
        self.render = render
        self.evaluate_all = evaluate_all
        self.stats = stats  # counts the exposures of each put (insights)
        self._rules_cache: tuple[FlagSet, bytes] | None = None
        self._rendered = _Rendered()  # (a stream opening renders ~all flags: ~1 us each)

    def snapshot(self, conn: Connection) -> bytes:
        """The connection's snapshot (b"" when its environment has no rules); the connection
        then holds the current version (:data:`~proxy.streams.connection.SnapshotFor`)."""
        fs = self.store.get(conn.env)
        if fs is None:
            return b""
        now = time.time()
        conn.hold(fs.version, fs.state_id, fs.interval(now))
        if conn.kind is StreamKind.EVENTS:
            return notification(fs.stream_id(now), fs.updated_at or now)
        if conn.kind is StreamKind.RULES:
            return self.rules_put(fs)
        return self.evaluated_put(conn, fs)

    def rules_put(self, fs: FlagSet) -> bytes:
        """The rules ``put`` of ``fs``, encoded once for every stream that needs it."""
        cached = self._rules_cache
        if cached is not None and cached[0] is fs:
            return cached[1]
        payload = rules_put(fs)
        self._rules_cache = (fs, payload)
        return payload

    def encoded(self, result: EvaluationResult, flag: Flag | None) -> bytes:
        """``result``'s OFREP item as JSON, encoded once while the result is in use."""
        return self._rendered.encoded(result, flag, self.render)

    def evaluate_context(self, fs: FlagSet, context: dict[str, Any],
                         env: str | None = None) -> dict[str, bytes]:
        """Flag key -> the encoded OFREP item of every flag of ``fs`` for ``context``, by key;
        with ``env``, their exposures are counted (they are being delivered)."""
        flags, render = fs.flags, self.render
        results = sorted(self.evaluate_all(fs, context), key=lambda r: r.key)
        if env is not None and self.stats is not None:
            self.stats.count_exposures(env, exposures_of(results))
        encoded = self._rendered.encoded
        return {r.key: encoded(r, flags.get(r.key), render) for r in results}

    def evaluated_put(self, conn: Connection, fs: FlagSet) -> bytes:
        """The evaluated ``put`` for the connection's context; it now holds these results."""
        now = time.time()  # (before evaluating: a boundary passing meanwhile is told later)
        items = self.evaluate_context(fs, conn.context, conn.env)
        conn.results = {k: hash(v) for k, v in items.items()}
        conn.hold(fs.version, fs.state_id, fs.interval(now))
        body = (b'{"flags":[' + b",".join(items.values()) + b'],"metadata":'
                + orjson.dumps(dict(fs.metadata)) + b"}")
        return frame("put", fs.stream_id(now), body)
