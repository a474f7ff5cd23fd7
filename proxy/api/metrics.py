"""Prometheus metrics (DESIGN §7), counted cheaply on the hot path.

Hot counters are plain dicts (a dict increment per request, no locks, no label lookups);
a custom collector turns them into metric families at scrape time. With several uvicorn
workers (``metrics_dir`` set) each worker also writes its cumulative counters to a JSON
snapshot in that directory every second, and a scrape served by any worker sums every
worker's snapshot (its own taken live), so counts survive which worker answers.

Series of deleted flags and environments are pruned: from the hot counters when the change
is published, and at scrape time from every snapshot (other workers' may be a second old, and
a worker that exited leaves its last one behind), by what the store serves now.
"""

from __future__ import annotations

import bisect
import contextlib
import hmac
import os
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api import errors
from proxy.model import Change
from proxy.store import Store

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)
PROPAGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LIVE_SNAPSHOT_S = 10.0  # gauges from worker snapshots older than this are ignored (dead worker)


class Histogram:
    """Bucket counts in a list; cumulative only when scraped."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def to_json(self) -> list[Any]:
        return [self.counts, self.sum]


MAX_USERS_PER_FLUSH = 100_000  # targetingKeys held per environment between insights flushes
MAX_ASSIGNMENTS = 200_000  # experiment assignments held between insights flushes (all envs)
MAX_EVENTS = 100_000  # tracked events held between insights flushes (all envs)
# Distinct bulk results counted but not yet expanded per flag; or this many bytes of them
# (350 flags, spliced: ~3 KB an entry; small bodies held whole: up to ~5 KB). Expanding is the
# cost (an add per dynamic flag per distinct entry, however often it was served), so the
# longer a batch, the more of a user's repeat requests share one expansion: at 1,000 entries
# with 10,000 users each request paid for its own (~5.6 us at 350 flags, a tenth of a cached
# request); reads (the insights flush every 5 s, a scrape) fold whatever is pending. The
# bytes bound is what pending entries the result cache has dropped can keep alive.
PENDING_FOLD = 20_000
PENDING_FOLD_BYTES = 32 * 1024 * 1024


class HotMetrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.durations: dict[str, Histogram] = {}
        # Exposure counters by slot: each (env, flag, variant, reason) gets an index once, so
        # counting is an integer add and a bulk result carries its slots (``exposure_slots``).
        self._slot_of: dict[tuple[str, str, str, str], int] = {}
        self._slot_keys: list[tuple[str, str, str, str] | None] = []  # None: pruned
        self._slot_counts: list[int] = []
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self.propagation = Histogram(PROPAGATION_BUCKETS)
        self.cache: Any = None  # the ResultCache (hits/misses/bypassed counters live there)
        # Bytes held per cache (flagedge_cache_bytes{cache}): each cache registers a reader.
        self.held: dict[str, Callable[[], int]] = {}
        # For the streams module: current connections per stream, events sent/coalesced.
        self.in_flight = 0  # HTTP requests being handled (streams included)
        self.sse_connections: dict[str, int] = {}
        self.sse_events: dict[tuple[str, str], int] = {}  # (stream, outcome) -> count
        # For insights (proxy.insights.exposures reads these through its Counts protocol);
        # off where nothing flushes them (offline files, insights_flush = 0).
        self.insights = True
        self.users: dict[str, set[str]] = {}  # env -> targetingKeys seen since the last flush
        self.usage: dict[str, dict[str, set[str]]] = {}  # env -> consumers/reporters key ids
        # (env, flag, revision) -> targetingKey -> variant: split assignments to record
        self.assignments: dict[tuple[str, str, str], dict[str, str]] = {}
        self._assignments_held = 0
        self.events: list[tuple[str, str, str, float | None]] = []  # env, event, tk, value
        self.dropped = {"users": 0, "assignments": 0, "events": 0}
        # The insights flusher's counters (proxy.insights.exposures.Flusher.stats), summed
        # over workers: flushes, their seconds, failures, events attributed/unattributed.
        self.insights_stats: Callable[[], dict[str, float]] | None = None

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.durations.get(route)
        if hist is None:
            hist = self.durations[route] = Histogram(DURATION_BUCKETS)
        hist.observe(seconds)

    def exposure_slots(self, env: str, exposures: tuple[tuple[str, str | None, str], ...]
                       ) -> tuple[int, ...]:
        """The counter slots of (flag, variant, reason) results in ``env``; new ones are added."""
        return tuple(self.exposure_slot(env, *e) for e in exposures)

    def exposure_slot(self, env: str, flag: str, variant: str | None, reason: str) -> int:
        """One result's counter slot. Slots are never reused, so callers may keep them."""
        key = (env, flag, variant or "", reason)
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._slot_of[key] = len(self._slot_keys)
            self._slot_keys.append(key)
            self._slot_counts.append(0)
        return slot

    def slot_live(self, slot: int) -> bool:
        """False once ``prune`` unlisted it (a flag created again gets a fresh slot)."""
        return self._slot_keys[slot] is not None

    @property
    def exposures(self) -> dict[tuple[str, str, str, str], int]:
        self.fold()
        return {k: n for k, n in zip(self._slot_keys, self._slot_counts, strict=True)
                if n and k is not None}

    def prune(self, env: str, keep: Container[str] = ()) -> None:
        """Drop the exposure series of every flag of ``env`` not in ``keep``. Their slots
        stay allocated but unlisted (cached results may still count into them); a flag
        created again gets a fresh slot, counting from zero."""
        for key, slot in list(self._slot_of.items()):
            if key[0] == env and key[1] not in keep:
                del self._slot_of[key]
                self._slot_keys[slot] = None

    def see_user(self, env: str, targeting_key: str) -> None:
        """A user was served in ``env`` (the day's unique users, DESIGN §11)."""
        seen = self.users.get(env)
        if seen is None:
            seen = self.users[env] = set()
        if len(seen) < MAX_USERS_PER_FLUSH:
            seen.add(targeting_key)
        elif targeting_key not in seen:
            self.dropped["users"] += 1

    def take_users(self) -> dict[str, set[str]]:
        users, self.users = self.users, {}
        return users

    def assign(self, env: str, flag: str, revision: str, targeting_key: str,
               variant: str) -> None:
        """An experiment's split assigned this user (DESIGN §11); the first one holds."""
        users = self.assignments.get((env, flag, revision))
        if users is None:
            users = self.assignments[(env, flag, revision)] = {}
        elif targeting_key in users:
            return
        if self._assignments_held >= MAX_ASSIGNMENTS:
            self.dropped["assignments"] += 1
            return
        users[targeting_key] = variant
        self._assignments_held += 1

    def take_assignments(self) -> dict[tuple[str, str, str], dict[str, str]]:
        taken, self.assignments, self._assignments_held = self.assignments, {}, 0
        return taken

    def track(self, env: str, event: str, targeting_key: str, value: float | None) -> bool:
        """A tracked event (``POST /v1/track``); False when the buffer is full (dropped)."""
        if len(self.events) >= MAX_EVENTS:
            self.dropped["events"] += 1
            return False
        self.events.append((env, event, targeting_key, value))
        return True

    def take_events(self) -> list[tuple[str, str, str, float | None]]:
        taken, self.events = self.events, []
        return taken

    def note_usage(self, env: str, kind: str, key_id: str) -> None:
        """``kind``: "consumers" (took rules to evaluate elsewhere) or "reporters" (reported
        exposures of its own evaluations)."""
        self.usage.setdefault(env, {}).setdefault(kind, set()).add(key_id)

    def take_usage(self) -> dict[str, dict[str, set[str]]]:
        usage, self.usage = self.usage, {}
        return usage

    def count_exposures(self, env: str, exposures: tuple[tuple[str, str | None, str], ...]) -> None:
        counts = self._slot_counts
        for flag, variant, reason in exposures:  # the single-flag endpoint: no tuple of slots
            counts[self.exposure_slot(env, flag, variant, reason)] += 1

    def count_reported(self, env: str, flag: str, variant: str | None, reason: str,
                       n: int) -> None:
        """Exposures a provider evaluated in-process and reported (``POST /v1/exposures``)."""
        self._slot_counts[self.exposure_slot(env, flag, variant, reason)] += n

    def count_entry(self, entry: Any) -> None:
        """Count the exposures of one bulk response served from ``entry`` (a CachedResult):
        an integer add now, added to its slots when metrics are read."""
        if entry.pending == 0:
            # Each pending entry keeps its memory (a whole body, or ~3 KB of pointers for
            # 350 flags spliced) alive after the result cache dropped it: the bounds above.
            # Fold *before* adding this one: folded, it would be counted but never listed.
            if len(self._pending) >= PENDING_FOLD or self._pending_bytes >= PENDING_FOLD_BYTES:
                self.fold()
            self._pending.append(entry)
            self._pending_bytes += entry.nbytes
        entry.pending += 1

    def fold(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        counts = self._slot_counts
        layouts = []  # the static flags of a flag set: counted once per fold, not per entry
        served: dict[int, list[tuple[int, ...]]] = {}  # times served -> those entries' slots
        for entry in pending:
            n, entry.pending = entry.pending, 0
            if not n:
                continue
            batch = served.get(n)
            if batch is None:
                served[n] = [entry.exposures]
            else:
                batch.append(entry.exposures)
            layout = entry.layout
            if layout.slots:
                if not layout.pending:
                    layouts.append(layout)
                layout.pending += n
        # Tallied in C (a Counter over all their slots), then one add per distinct slot and
        # times served: a fold of 10,000 entries of 350 flags meets ~1.8 million slots.
        for n, batch in served.items():
            for slot, times in Counter(chain.from_iterable(batch)).items():
                counts[slot] += times * n
        for layout in layouts:
            n, layout.pending = layout.pending, 0
            for slot in layout.slots:
                counts[slot] += n

    def on_change(self, change: Change, flag_set: Any) -> None:
        if change.written_at:
            self.propagation.observe(max(0.0, change.applied_at - change.written_at))
        if change.deleted or change.reset:  # not on every change: a pass over every series
            self.prune(change.env, keep=flag_set.flags)  # env deleted: an empty set

    # -- multiprocess snapshots ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        self.fold()
        return {
            "at": time.time(),
            "requests": [[r, s, n] for (r, s), n in self.requests.items()],
            "durations": {r: h.to_json() for r, h in self.durations.items()},
            "exposures": [[*k, n] for k, n in self.exposures.items()],
            "propagation": self.propagation.to_json(),
            "cache": ([self.cache.hits, self.cache.misses, self.cache.bypassed]
                      if self.cache is not None else [0, 0, 0]),
            "sse_connections": self.sse_connections,
            "sse_events": [[s, o, n] for (s, o), n in self.sse_events.items()],
            "held": {name: read() for name, read in self.held.items()},
            "insights": self._insights_snapshot(),
        }

    def _insights_snapshot(self) -> dict[str, float]:
        out = dict(self.insights_stats()) if self.insights_stats else {}
        for what, n in self.dropped.items():
            out[f"dropped_{what}"] = out.get(f"dropped_{what}", 0) + n
        return out

    def write_snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".worker-{os.getpid()}.tmp"
        tmp.write_bytes(orjson.dumps(self.snapshot()))
        tmp.replace(directory / f"worker-{os.getpid()}.json")


def _merged(hot: HotMetrics, directory: Path | None) -> dict[str, Any]:
    """This worker's live counters plus every other worker's last snapshot."""
    snaps = [hot.snapshot()]
    if directory is not None and directory.is_dir():
        own = f"worker-{os.getpid()}.json"
        for path in directory.glob("worker-*.json"):
            if path.name != own:
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    snaps.append(orjson.loads(path.read_bytes()))
    now = time.time()
    out: dict[str, Any] = {"requests": {}, "durations": {}, "exposures": {}, "cache": [0, 0, 0],
                           "propagation": None, "sse_connections": {}, "sse_events": {},
                           "held": {}, "insights": {}}
    for snap in snaps:
        for r, s, n in snap["requests"]:
            out["requests"][(r, s)] = out["requests"].get((r, s), 0) + n
        for r, (counts, total) in snap["durations"].items():
            acc = out["durations"].setdefault(r, [[0] * len(counts), 0.0])
            acc[0] = [a + b for a, b in zip(acc[0], counts, strict=True)]
            acc[1] += total
        for *k, n in snap["exposures"]:
            out["exposures"][tuple(k)] = out["exposures"].get(tuple(k), 0) + n
        counts, total = snap["propagation"]
        if out["propagation"] is None:
            out["propagation"] = [list(counts), total]
        else:
            out["propagation"][0] = [a + b for a, b in zip(out["propagation"][0], counts, strict=True)]
            out["propagation"][1] += total
        out["cache"] = [a + b for a, b in zip(out["cache"], snap["cache"], strict=True)]
        for s, o, n in snap["sse_events"]:
            out["sse_events"][(s, o)] = out["sse_events"].get((s, o), 0) + n
        for name, n in snap.get("insights", {}).items():
            out["insights"][name] = out["insights"].get(name, 0) + n
        if now - snap["at"] <= LIVE_SNAPSHOT_S:
            for s, n in snap["sse_connections"].items():
                out["sse_connections"][s] = out["sse_connections"].get(s, 0) + n
            for name, n in snap.get("held", {}).items():
                out["held"][name] = out["held"].get(name, 0) + n
    return out


def _hist_family(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


class FlagedgeCollector:
    def __init__(self, hot: HotMetrics, store: Store, directory: Path | None = None,
                 extra: Callable[[], Iterator[Metric]] | None = None):
        self.hot, self.store, self.directory, self.extra = hot, store, directory, extra

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        m = _merged(self.hot, self.directory)
        req = CounterMetricFamily("flagedge_http_requests", "HTTP requests by route and status",
                                  labels=["route", "status"])
        for (route, status), n in sorted(m["requests"].items()):
            req.add_metric([route, str(status)], n)
        yield req
        dur = _hist_family("flagedge_http_request_duration_seconds", "HTTP request duration",
                           ["route"])
        for route, (counts, total) in sorted(m["durations"].items()):
            dur.add_metric([route], _buckets(DURATION_BUCKETS, counts), total)
        yield dur
        yield GaugeMetricFamily("flagedge_http_requests_in_flight",
                                "HTTP requests being handled by this worker (streams included)",
                                value=self.hot.in_flight)
        ev = CounterMetricFamily("flagedge_evaluations",
                                 "Flag evaluations served (exposures) by env, flag, variant, reason",
                                 labels=["env", "flag", "variant", "reason"])
        for key, n in sorted(m["exposures"].items()):
            fs = self.store.get(key[0])
            if fs is not None and key[1] in fs.flags:  # a deleted flag or env: pruned
                ev.add_metric(list(key), n)
        yield ev
        hits, misses, bypassed = m["cache"]
        cache = CounterMetricFamily("flagedge_result_cache_lookups", "Bulk result cache lookups",
                                    labels=["outcome"])
        cache.add_metric(["hit"], hits)
        cache.add_metric(["miss"], misses)
        cache.add_metric(["bypass"], bypassed)
        yield cache
        yield GaugeMetricFamily("flagedge_result_cache_hit_ratio",
                                "Share of cacheable bulk lookups answered from the result cache",
                                value=hits / (hits + misses) if hits + misses else 0.0)
        held = GaugeMetricFamily("flagedge_cache_bytes",
                                 "Bytes held by each cache (accounted; summed over workers)",
                                 labels=["cache"])
        for name, n in sorted(m["held"].items()):
            held.add_metric([name], n)
        yield held
        yield from _insights_families(m["insights"])
        prop = _hist_family("flagedge_change_propagation_seconds",
                            "Time from the Redis write to the change being served", [])
        counts, total = m["propagation"]
        prop.add_metric([], _buckets(PROPAGATION_BUCKETS, counts), total)
        yield prop
        conns = GaugeMetricFamily("flagedge_sse_connections", "Open SSE connections",
                                  labels=["stream"])
        for stream, n in sorted(m["sse_connections"].items()):
            conns.add_metric([stream], n)
        yield conns
        events = CounterMetricFamily("flagedge_sse_events", "SSE events by stream and outcome",
                                     labels=["stream", "outcome"])
        for (stream, outcome), n in sorted(m["sse_events"].items()):
            events.add_metric([stream, outcome], n)
        yield events
        yield from self._store_metrics()
        if self.extra is not None:
            yield from self.extra()

    def _store_metrics(self) -> Iterator[Metric]:
        now = time.time()
        version = GaugeMetricFamily("flagedge_ruleset_version", "Rules version served",
                                    labels=["env"])
        age = GaugeMetricFamily("flagedge_ruleset_age_seconds",
                                "Seconds since the served rules were written", labels=["env"])
        for env in self.store.envs():
            fs = self.store.get(env)
            if fs is None:
                continue
            version.add_metric([env], fs.version)
            if fs.updated_at:
                age.add_metric([env], max(0.0, now - fs.updated_at))
        yield version
        yield age
        connected = GaugeMetricFamily("flagedge_source_connected",
                                      "1 while the rules source is connected", labels=["env"])
        degraded = GaugeMetricFamily("flagedge_source_degraded",
                                     "1 while stale rules are served", labels=["env"])
        for env, st in sorted(self.store.status.items()):
            connected.add_metric([env], 1.0 if st.connected else 0.0)
            degraded.add_metric([env], 1.0 if st.degraded_reason else 0.0)
        yield connected
        yield degraded
        rejected = CounterMetricFamily("flagedge_rules_rejected",
                                       "Flags or documents refused by validation")
        rejected.add_metric([], self.store.rejected_total)
        yield rejected
        held = GaugeMetricFamily(
            "flagedge_rules_rejected_flags",
            "Flags held by the source but served as their error (or last good version) "
            "because their definition is invalid", labels=["env"])
        for env in self.store.envs():
            fs = self.store.get(env)
            held.add_metric([env], float(sum(1 for k in fs.rejected if k)) if fs else 0.0)
        yield held


def _insights_families(stats: dict[str, float]) -> Iterator[Metric]:
    """The insights flushes of every worker (DESIGN §11)."""
    flushes = CounterMetricFamily("flagedge_insights_flushes", "Insights flushes to Redis",
                                  labels=["outcome"])
    flushes.add_metric(["ok"], stats.get("flushes", 0) - stats.get("failures", 0))
    flushes.add_metric(["failed"], stats.get("failures", 0))
    yield flushes
    yield CounterMetricFamily("flagedge_insights_flush_seconds",
                              "Time spent flushing insights (divide by flushes for the mean)",
                              value=stats.get("flush_seconds", 0.0))
    dropped = CounterMetricFamily("flagedge_insights_dropped",
                                  "Insights dropped past their bounds while Redis was away",
                                  labels=["what"])
    for what in ("users", "assignments", "events"):
        dropped.add_metric([what], stats.get(f"dropped_{what}", 0))
    yield dropped
    events = CounterMetricFamily("flagedge_insights_events",
                                 "Tracked events attributed to an experiment assignment, or not",
                                 labels=["outcome"])
    events.add_metric(["attributed"], stats.get("attributed", 0))
    events.add_metric(["unattributed"], stats.get("unattributed", 0))
    yield events


class MetricsAccess:
    """Who may read /metrics (every environment's name, version, flags and variants) and the
    details of /readyz: anyone when no ``metrics_key`` is set, else only a request with
    ``Authorization: Bearer <metrics_key>`` (compared in constant time)."""

    def __init__(self, key: str | None = None):
        self._key = key.encode() if key else None

    @property
    def open(self) -> bool:
        return self._key is None

    def allows(self, request: Request) -> bool:
        if self._key is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("latin-1", "replace"), self._key)


class Metrics:
    """The app's metrics: hot counters, a registry to scrape, the ASGI timing middleware."""

    def __init__(self, store: Store, directory: Path | None = None,
                 access: MetricsAccess | None = None):
        self.access = access or MetricsAccess()
        self.hot = HotMetrics()
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FlagedgeCollector(self.hot, store, directory))  # type: ignore[arg-type]
        store.subscribe(self.hot.on_change)

    async def endpoint(self, request: Request) -> Response:
        if not self.access.allows(request):
            return errors.unauthorized("/metrics needs 'Authorization: Bearer <metrics_key>'")
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        hot = self.hot
        clock = time.perf_counter

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = clock()
            status = 500
            hot.in_flight += 1

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                hot.in_flight -= 1
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                hot.observe_request(path, status, clock() - start)

        return timed
