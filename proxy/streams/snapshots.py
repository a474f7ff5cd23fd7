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

    def evaluate_context(self, fs: FlagSet, context: dict[str, Any],
                         env: str | None = None) -> dict[str, bytes]:
        """Flag key -> the encoded OFREP item of every flag of ``fs`` for ``context``, by key;
        with ``env``, their exposures are counted (they are being delivered)."""
        flags, render = fs.flags, self.render
        results = sorted(self.evaluate_all(fs, context), key=lambda r: r.key)
        if env is not None and self.stats is not None:
            self.stats.count_exposures(env, exposures_of(results))
        return {r.key: orjson.dumps(render(r, flags.get(r.key))) for r in results}

    def evaluated_put(self, conn: Connection, fs: FlagSet) -> bytes:
        """The evaluated ``put`` for the connection's context; it now holds these results."""
        now = time.time()  # (before evaluating: a boundary passing meanwhile is told later)
        items = self.evaluate_context(fs, conn.context, conn.env)
        conn.results = {k: hash(v) for k, v in items.items()}
        conn.hold(fs.version, fs.state_id, fs.interval(now))
        body = (b'{"flags":[' + b",".join(items.values()) + b'],"metadata":'
                + orjson.dumps(dict(fs.metadata)) + b"}")
        return frame("put", fs.stream_id(now), body)
