"""Time boundaries on the streams (DESIGN §10): rules that compare ``$flagd.timestamp`` with
literal times change their results at those times with no write. At each boundary of an
environment's flag set, the fan-out's one timer for that environment tells its events
streams (a ``refetchEvaluation`` naming the new interval) and its evaluated streams (the
patches of their context, or the new id alone), each at a random point within the
``boundary_jitter`` so that clients do not all re-fetch in one instant. A round is built
here, once per interval for events and once per distinct context for evaluated streams.

Stream ids gain the interval (``FlagSet.stream_id``: ``VERSION-TAG~I``), so that a client
resuming across a boundary is told what it missed (:mod:`proxy.streams.resume`).
"""

from __future__ import annotations

import orjson

from proxy.model import EvaluationResult, FlagSet
from proxy.streams.connection import Connection, StreamKind
from proxy.streams.frames import Counters, diff_frames, exposures_of, id_only, notification
from proxy.streams.snapshots import Evaluate, Render

# Boundaries are Unix times, the event loop's clock is monotonic: an environment's boundary
# timer looks at the wall clock again at least this often.
BOUNDARY_RECHECK_S = 60.0
# Streams told of a boundary are spread over the jitter in slots of this length (one timer
# per slot, not per connection).
BOUNDARY_SLOT_S = 0.05


def timed_flags(fs: FlagSet) -> set[str]:
    """The flags of ``fs`` whose results change at time boundaries."""
    return {k for k, flag in fs.flags.items() if flag.boundaries and flag.static_result is None}


class BoundaryRound:
    """What one boundary round tells streams, built once per interval (events) or per
    distinct context (evaluated), as a change round does."""

    def __init__(self, fs: FlagSet, evaluate: Evaluate, render: Render, stats: Counters):
        self.fs = fs
        self.evaluate, self.render, self.stats = evaluate, render, stats
        self.keys = timed_flags(fs)
        self.interval = -1
        self.stream_id = ""
        self.notification = b""
        self.per_context: dict[str, tuple[dict[str, EvaluationResult], dict[str, bytes]]] = {}
        self.sent: dict[StreamKind, int] = {}

    def at(self, now: float) -> None:
        """The interval ``now`` falls in (a round may outlast the next boundary)."""
        interval = self.fs.interval(now)
        if interval != self.interval:
            fs = self.fs
            self.interval, self.stream_id = interval, fs.stream_id(now)
            self.notification = notification(self.stream_id, fs.updated_at or now)
            self.per_context.clear()

    def tell(self, conn: Connection) -> None:
        fs = self.fs
        if (conn.closed or conn.needs_snapshot or conn.version == 0
                or conn.state_id != fs.state_id or conn.interval >= self.interval):
            return  # gone, owed a snapshot anyway, at another state, or already told
        conn.hold(conn.version, conn.state_id, self.interval)
        payload = self.notification if conn.kind is StreamKind.EVENTS else self._evaluated(conn)
        if conn.push(payload, None):
            self.sent[conn.kind] = self.sent.get(conn.kind, 0) + 1

    def _evaluated(self, conn: Connection) -> bytes:
        """The patches of this interval for the connection's context (its id alone when
        none of its results changed: a resume must not go back to the previous interval)."""
        fs = self.fs
        done = self.per_context.get(conn.ctx_key)
        if done is None:
            evaluate, render = self.evaluate, self.render
            results = {k: evaluate(fs, k, conn.context) for k in self.keys}
            items = {k: orjson.dumps(render(r, fs.flags[k])) for k, r in results.items()}
            done = self.per_context[conn.ctx_key] = (results, items)
        results, items = done
        patched = [k for k, item in items.items() if conn.results.get(k) != hash(item)]
        payload = diff_frames(conn.results, items, self.keys, self.stream_id)
        if patched:  # what this client is shown anew (insights), as for a change's patch
            self.stats.count_exposures(conn.env, exposures_of(results[k] for k in patched))
        return payload or id_only(self.stream_id)
