"""Exposure reporting for in-process evaluations (DESIGN §11): an OpenFeature hook counts
each evaluation the provider answered, by (flag, variant, reason), and a task on the
provider's stream thread posts the counts to ``POST /v1/exposures`` every ``period`` seconds
(and once more at shutdown), so insights count in-process evaluations with the edge's own.
A failed report keeps its counts for the next one (bounded: at most ``MAX_KEYS`` distinct
keys; beyond, new ones are dropped and counted in ``dropped``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import httpx
from openfeature.hook import Hook, HookContext, HookHints

log = logging.getLogger("flagedge.provider")

EXPOSURES_PATH = "/v1/exposures"
MAX_KEYS = 10_000
BATCH = 1_000  # the endpoint's limit of items per report
REASONS = frozenset({"STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED", "ERROR"})
Key = tuple[str, str | None, str]


class ExposureCounts(Hook):
    """The hook: thread-safe counts of evaluations (the SDK calls hooks on caller threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = {}
        self.dropped = 0

    def after(self, hook_context: HookContext, details: Any, hints: HookHints) -> None:
        reason = str(getattr(details.reason, "value", details.reason) or "")
        if details.error_code is not None:
            reason = "ERROR"
        if reason not in REASONS:  # SDK-level outcomes (CACHED, UNKNOWN, ...): not ours
            return
        key = (details.flag_key, None if reason == "ERROR" else details.variant, reason)
        with self._lock:
            if key in self._counts:
                self._counts[key] += 1
            elif len(self._counts) < MAX_KEYS:
                self._counts[key] = 1
            else:
                self.dropped += 1

    def take(self) -> dict[Key, int]:
        with self._lock:
            taken, self._counts = self._counts, {}
        return taken

    def give_back(self, counts: dict[Key, int]) -> None:
        """A report that failed: its counts go back in (bounded as ever)."""
        with self._lock:
            for key, n in counts.items():
                if key in self._counts or len(self._counts) < MAX_KEYS:
                    self._counts[key] = self._counts.get(key, 0) + n
                else:
                    self.dropped += n


async def report(client: httpx.AsyncClient, url: str, counts: ExposureCounts) -> bool:
    """Post what was counted; False when the proxy did not take all of it (what it did not
    take is kept for the next report)."""
    taken = list(counts.take().items())
    for i in range(0, len(taken), BATCH):
        batch = taken[i:i + BATCH]
        items = [{"flag": f, "variant": v, "reason": r, "count": n} for (f, v, r), n in batch]
        try:
            response = await client.post(url, json={"exposures": items})
            ok = response.status_code == 202
        except (httpx.HTTPError, OSError):
            ok = False
        if not ok:
            log.warning("exposure report to %s failed; kept for the next one", url)
            counts.give_back(dict(taken[i:]))
            return False
    return True


async def report_every(period: float, client: httpx.AsyncClient, url: str,
                       counts: ExposureCounts) -> None:
    """Report every ``period`` seconds until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(period)
            await report(client, url, counts)
    finally:
        await asyncio.shield(report(client, url, counts))
