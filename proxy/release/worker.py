"""The release worker (DESIGN §10): applies scheduled change requests when due, expires
overdue open ones, and writes the static rule of progressive rollouts past their last step
(``rollout.finish_due``: a record compare-and-set, so several workers write it once). Every ``flagedge serve`` process runs one (``--no-release-worker`` /
``release_worker = false`` to opt out; never in offline file mode).

How it finds work: a scheduled request is indexed, when it is created, in the sorted set
``flagedge:{ENV}:schedule`` (id -> apply_at, same slot as the request; see
``storage/requests.py``). Each tick asks, per environment, for the ids due by Redis' clock
(one script: ``ZRANGEBYSCORE -inf TIME``), so the cost of a tick does not grow with the
number of requests ever made; with a tick every 0.2 s a due request is applied within a
fraction of a second. Requests are applied by the foundation's one apply script
(``review.apply_scheduled``), which checks state, approvals, due-ness (Redis ``TIME``) and
conflicts itself: any number of workers racing on one request write it once, and a worker
that was down at the due time changes nothing (the others apply it, or it does on return).

A slower sweep (at start, then every ``sweep_every`` seconds) scans the requests hash:
it expires open requests past their expiry, drops closed requests from the index, and
indexes scheduled open requests missing from it (made before the index existed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import ResponseError

from proxy.release import review, rollout
from proxy.release.requests import Request
from proxy.storage import layout
from proxy.storage import requests as stored
from proxy.storage.replies import text

log = logging.getLogger("flagedge.release")

TICK_S = 0.2  # between looks at the due index: a due request waits at most this (+ apply)
SWEEP_S = 15.0  # between scans of the requests hash (expiry; index repair)
RETRY_S = 5.0  # after a failing tick (Redis away), before the next try


class ReleaseWorker:
    """Blocking ticks over a sync Redis client; :meth:`run` drives them from asyncio in a
    thread so the event loop never waits on Redis or on a preview."""

    def __init__(self, client: Any, *, envs: Callable[[], Iterable[str]] | None = None,
                 tick_s: float = TICK_S, sweep_s: float = SWEEP_S,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self._envs = envs or self._registered_envs
        self.tick_s, self.sweep_s, self._clock = tick_s, sweep_s, clock
        self._next_sweep = 0.0  # sweep at the first tick: catch up after being down
        self._failing: set[tuple[str, int]] = set()  # logged once, retried at the next sweep
        self._detached: set[tuple[str, str]] = set()  # rollouts whose ramp was replaced

    def _registered_envs(self) -> list[str]:
        return sorted(text(e) for e in self.client.smembers(layout.ENVS))

    def tick(self) -> list[review.Outcome]:
        """One pass over every environment: sweep when it is time, then apply what is due.
        Returns the outcomes of the requests it settled (applied, conflict, expired)."""
        sweep = self._clock() >= self._next_sweep
        if sweep:
            self._next_sweep = self._clock() + self.sweep_s
            self._failing.clear()
        done: list[review.Outcome] = []
        for env in self._envs():
            if sweep:
                self.sweep(env)
            done += self.apply_due(env)
            self.finish_rollouts(env)
        return done

    def finish_rollouts(self, env: str) -> list[rollout.Finished]:
        """The cleanup write of every rollout past its last boundary (release/rollout.py)."""
        finished = rollout.finish_due(self.client, env)
        for item in finished:
            if item.status == "done":
                log.info("release worker: rollout of %s in %s done as version %s",
                         item.flag, env, item.version)
            elif item.status == "detached" and (env, item.flag) not in self._detached:
                self._detached.add((env, item.flag))  # logged once, until a restart
                log.warning("release worker: rollout of %s in %s not finished: the flag no "
                            "longer has its ramp (another write replaced it); nothing written",
                            item.flag, env)
        return finished

    def apply_due(self, env: str) -> list[review.Outcome]:
        done = []
        for request_id in stored.due_ids(self.client, env):
            if (env, request_id) in self._failing:
                continue
            try:
                outcome = review.apply_scheduled(self.client, env, request_id)
            except (review.NotOpen, LookupError):
                stored.unschedule(self.client, env, request_id)  # closed or gone: tidy
                continue
            except (ValueError, RuntimeError, ResponseError) as exc:  # a broken request/key
                self._failing.add((env, request_id))
                log.warning("release worker: request %s in %s not applied: %s",
                            request_id, env, exc)
                continue
            if outcome is None or outcome.status in ("pending", "not_due"):
                continue  # no quorum yet (an approval past due applies it), or clock skew
            stored.unschedule(self.client, env, request_id)
            log.info("release worker: request %s in %s %s%s", request_id, env, outcome.status,
                     f" as version {outcome.version}" if outcome.version else
                     f": {outcome.reason}")
            done.append(outcome)
        return done

    def sweep(self, env: str) -> list[int]:
        """Expire overdue open requests and repair the index; returns the expired ids."""
        expired = review.expire_due(self.client, env)
        indexed = stored.scheduled(self.client, env)
        for request_id, raw in stored.read_all_raw(self.client, env).items():
            try:
                request = Request.from_json(raw)
            except ValueError:
                continue
            if request.state != "open" and request_id in indexed:
                stored.unschedule(self.client, env, request_id)
            elif (request.state == "open" and request.apply_at is not None
                  and request_id not in indexed):
                stored.schedule(self.client, env, request_id, request.apply_at)
        for request_id in expired:
            log.info("release worker: request %s in %s expired", request_id, env)
        return expired

    async def run(self) -> None:
        """Tick forever (until cancelled); a failing tick (Redis away) is logged and retried
        after RETRY_S."""
        while True:
            try:
                await asyncio.to_thread(self.tick)
                delay = self.tick_s
            except Exception as exc:  # Redis down, a broken key: keep serving, try again
                log.warning("release worker: %s; retrying in %.0f s", exc, RETRY_S)
                delay = RETRY_S
            await asyncio.sleep(delay)
