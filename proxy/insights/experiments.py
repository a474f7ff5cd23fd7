"""Experiment assignments and tracked outcomes, written at each insights flush (DESIGN §11).

Assignments: each worker holds the split assignments it served (``(env, flag, revision) ->
targetingKey -> variant``); a flush records them with ``HSETNX`` (the first holds) and
counts users per variant exactly. Outcomes: events from ``POST /v1/track`` are attributed to
the *stored* assignment of each running experiment of their environment (never by
re-evaluating the rule, which gives wrong answers once the rule changed, the context lacks
attributes, or the rule is time-stepped). An event whose user has no assignment yet (another
worker has not flushed it) is held for ``HOLD_FLUSHES`` more flushes, then counted as
unattributed: most such users were never in the experiment (routed before the split).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.storage import insights as keys
from proxy.store import Store

HOLD_FLUSHES = 3
MAX_HELD = 100_000
CHUNK = 500  # pairs per script call


@dataclass(slots=True)
class Held:
    env: str
    flag: str
    revision: str
    event: str
    targeting_key: str
    value: float | None
    attempts: int = 0


class Experiments:
    def __init__(self, client: Any, store: Store, retention_s: int):
        self.store = store
        self.retention_s = retention_s
        self._assign = client.register_script(keys.ASSIGN_LUA)
        self._attribute = client.register_script(keys.ATTRIBUTE_LUA)
        self._client = client
        self._pending: dict[tuple[str, str, str], dict[str, str]] = {}
        self._held: list[Held] = []
        self.attributed = 0
        self.unattributed = 0
        self.dropped = 0

    def hold_assignments(self, taken: Mapping[tuple[str, str, str], Mapping[str, str]]) -> None:
        for key, users in taken.items():
            mine = self._pending.setdefault(key, {})
            for tk, variant in users.items():
                mine.setdefault(tk, variant)

    def hold_events(self, events: Iterable[tuple[str, str, str, float | None]]) -> None:
        """Each event once per running experiment of its environment."""
        for env, event, tk, value in events:
            flag_set = self.store.get(env)
            if flag_set is None:
                continue
            for flag in flag_set.experiments:
                revision = flag_set.flags[flag].experiment
                if revision is None:
                    continue
                if len(self._held) >= MAX_HELD:
                    self.dropped += 1
                    continue
                self._held.append(Held(env, flag, revision, event, tk, value))

    async def flush(self) -> None:
        """Assignments first, so this worker's own are there when its events look them up.
        What fails stays held for the next flush."""
        if self._pending:
            pipe = self._client.pipeline(transaction=False)
            for (env, flag, revision), users in self._pending.items():
                pairs = [x for tk_variant in users.items() for x in tk_variant]
                for i in range(0, len(pairs), 2 * CHUNK):
                    await self._assign(keys=[keys.experiment_key(env, flag, revision),
                                             keys.experiment_key(env, flag, revision)
                                             + ":assigned"],
                                       args=[self.retention_s, *pairs[i:i + 2 * CHUNK]],
                                       client=pipe)
            await pipe.execute()
            self._pending = {}
        if self._held:
            await self._attribute_held()

    async def _attribute_held(self) -> None:
        groups: dict[tuple[str, str, str, str], list[Held]] = defaultdict(list)
        for held in self._held:
            groups[(held.env, held.flag, held.revision, held.event)].append(held)
        still: list[Held] = []
        for (env, flag, revision, event), items in groups.items():
            for i in range(0, len(items), CHUNK):
                chunk = items[i:i + CHUNK]
                args: list[Any] = [self.retention_s]
                for h in chunk:
                    args += [h.targeting_key, "" if h.value is None else repr(float(h.value))]
                unassigned = await self._attribute(
                    keys=keys.experiment_keys(env, flag, revision, event), args=args)
                self.attributed += len(chunk) - len(unassigned)
                for position in unassigned:
                    h = chunk[int(position) - 1]
                    h.attempts += 1
                    if h.attempts > HOLD_FLUSHES:
                        self.unattributed += 1
                    else:
                        still.append(h)
        self._held = still
