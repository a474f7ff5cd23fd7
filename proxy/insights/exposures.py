"""Exposures across workers and replicas (DESIGN §11): each worker counts in memory (the
HTTP layer's counters, read through ``Counts``) and a ``Flusher`` writes what changed since
its last flush to Redis every ``insights_flush`` seconds, one pipeline per environment.
Nothing on the request path touches Redis.

Counts are cumulative in memory, so a failed flush loses nothing: the next one writes the
difference since the last that succeeded (attributed to the minute it lands in). The users
seen between flushes are held for the next attempt, at most ``MAX_HELD_USERS`` per
environment (beyond that they are dropped and counted: the day's unique-user estimate is
then low, never high). A worker that dies loses at most one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from proxy.insights.experiments import Experiments
from proxy.storage import insights as keys
from proxy.store import Store

log = logging.getLogger("flagedge.insights")

MAX_HELD_USERS = 100_000  # per environment, between successful flushes
PFADD_CHUNK = 1_000
ExposureKey = tuple[str, str, str, str]  # env, flag, variant ("" for none), reason


class Counts(Protocol):
    """What one worker counted (``proxy.api.metrics.HotMetrics`` provides it)."""

    @property
    def exposures(self) -> Mapping[ExposureKey, int]:
        """Cumulative exposure counts since the worker started."""
        ...

    def take_users(self) -> dict[str, set[str]]:
        """The targetingKeys seen per environment since the last call."""
        ...

    def take_assignments(self) -> dict[tuple[str, str, str], dict[str, str]]:
        """(env, flag, revision) -> targetingKey -> variant: split assignments served."""
        ...

    def take_events(self) -> list[tuple[str, str, str, float | None]]:
        """(env, event, targetingKey, value) tracked since the last call."""
        ...

    def take_usage(self) -> dict[str, dict[str, set[str]]]:
        """Per environment, ``{"consumers": key ids, "reporters": key ids}`` since the last
        call: keys that took rules to evaluate elsewhere, and keys that reported exposures."""
        ...


class Flusher:
    def __init__(self, client: Any, counts: Counts, store: Store, *, days: int,
                 clock: Callable[[], float] = time.time,
                 on_new_day: Callable[[], None] | None = None):
        self.client = client
        self.counts = counts
        self.store = store
        self.retention_s = days * 86_400
        self.clock = clock
        # Called at the first flush of each UTC day: the result cache drops its raw-body
        # aliases (a request answered from one is never parsed, so its user would not be
        # counted that day).
        self.on_new_day = on_new_day
        self._day = keys.day_of(clock())
        self._written: dict[ExposureKey, int] = {}  # cumulative counts already in Redis
        self._users: dict[str, set[str]] = {}  # seen, not yet written
        self._usage: dict[str, dict[str, set[str]]] = {}
        self._born: dict[str, Any] = {}  # env -> the flag set whose flags were last marked
        self.experiments = Experiments(client, store, self.retention_s)
        self._exposures_script = client.register_script(keys.EXPOSURES_LUA)
        self.users_dropped = 0
        self.failures = 0
        self.flushes = 0
        self.flush_seconds = 0.0
        self.last_seconds = 0.0  # duration of the last flush

    async def flush(self) -> int:
        """Write what changed; returns the exposure fields written (0 when Redis failed)."""
        started = time.perf_counter()
        now = self.clock()
        if keys.day_of(now) != self._day:
            self._day = keys.day_of(now)
            if self.on_new_day is not None:
                self.on_new_day()
        deltas = self._deltas()
        self._hold(self.counts.take_users(), self.counts.take_usage())
        envs = set(deltas) | set(self._users) | set(self._usage) | set(self.store.envs())
        written, failed = 0, False
        for env in sorted(envs):
            try:
                written += await self._flush_env(env, deltas.get(env, {}), now)
            except Exception as exc:  # Redis down or failing over: held for the next flush
                failed = True
                log.warning("insights flush of %s failed (%s); counts held for the next one",
                            env, type(exc).__name__)
        self.experiments.hold_assignments(self.counts.take_assignments())
        self.experiments.hold_events(self.counts.take_events())
        try:
            await self.experiments.flush()
        except Exception as exc:  # held for the next flush
            failed = True
            log.warning("insights flush of experiments failed (%s); held for the next one",
                        type(exc).__name__)
        self.last_seconds = time.perf_counter() - started
        self.flushes += 1
        self.failures += failed
        self.flush_seconds += self.last_seconds
        return written

    def stats(self) -> dict[str, float]:
        """Counters for metrics (``flagedge_insights_*``)."""
        ex = self.experiments
        return {"flushes": self.flushes, "failures": self.failures,
                "flush_seconds": self.flush_seconds, "attributed": ex.attributed,
                "unattributed": ex.unattributed,
                "dropped_users": self.users_dropped, "dropped_events": ex.dropped}

    def _deltas(self) -> dict[str, dict[ExposureKey, int]]:
        out: dict[str, dict[ExposureKey, int]] = {}
        written = self._written
        for key, total in self.counts.exposures.items():
            n = total - written.get(key, 0)
            if n > 0:
                out.setdefault(key[0], {})[key] = n
        return out

    def _hold(self, users: dict[str, set[str]], usage: dict[str, dict[str, set[str]]]) -> None:
        for env, seen in users.items():
            held = self._users.setdefault(env, set())
            room = MAX_HELD_USERS - len(held)
            if len(seen) > room:
                self.users_dropped += len(seen) - max(room, 0)
                seen = set(list(seen)[:max(room, 0)])
            held |= seen
        for env, kinds in usage.items():
            mine = self._usage.setdefault(env, {})
            for kind, ids in kinds.items():
                mine.setdefault(kind, set()).update(ids)

    async def _flush_env(self, env: str, deltas: Mapping[ExposureKey, int], now: float) -> int:
        users = self._users.get(env, set())
        usage = self._usage.get(env, {})
        flag_set = self.store.get(env)
        born = flag_set is not None and self._born.get(env) is not flag_set
        if not deltas and not users and not usage and not born:
            return 0
        pipe = self.client.pipeline(transaction=False)
        await self._exposures(pipe, env, deltas, now)
        _users(pipe, env, users, now, self.retention_s)
        stamp = int(now)
        for kind, ids in usage.items():
            key = keys.consumers_key(env) if kind == "consumers" else keys.reporters_key(env)
            if ids:
                pipe.hset(key, mapping=dict.fromkeys(ids, stamp))
        if born:
            for flag in flag_set.flags:  # type: ignore[union-attr]
                pipe.hsetnx(keys.born_key(env), flag, stamp)
        await pipe.execute()
        # Only now is it in Redis: a failure above leaves all of it for the next flush.
        for key, n in deltas.items():
            self._written[key] = self._written.get(key, 0) + n
        self._users.pop(env, None)
        self._usage.pop(env, None)
        if born:
            self._born[env] = flag_set
        return len(deltas)

    async def _exposures(self, pipe: Any, env: str, deltas: Mapping[ExposureKey, int],
                         now: float) -> None:
        if not deltas:
            return
        args: list[Any] = [keys.MINUTE_KEYS_S, self.retention_s, int(now)]
        for (_env, flag, variant, reason), n in deltas.items():
            args += (flag, keys.field(flag, variant, reason), n)
        await self._exposures_script(
            keys=[keys.minute_key(env, keys.minute_of(now)), keys.day_key(env, keys.day_of(now)),
                  keys.seen_key(env)], args=args, client=pipe)

    async def run(self, period: float) -> None:
        """Flush every ``period`` seconds until cancelled; then once more (best effort)."""
        try:
            while True:
                await asyncio.sleep(period)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.flush()), timeout=2.0)


def _users(pipe: Any, env: str, users: Iterable[str], now: float, retention_s: int) -> None:
    users = list(users)
    if not users:
        return
    key = keys.users_key(env, keys.day_of(now))
    for i in range(0, len(users), PFADD_CHUNK):
        pipe.pfadd(key, *users[i:i + PFADD_CHUNK])
    pipe.expire(key, retention_s)
