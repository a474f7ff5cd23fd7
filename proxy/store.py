"""In-memory, versioned, per-environment rule store.

Sources (Redis, file) build a new immutable :class:`FlagSet` and call :meth:`Store.publish`;
services (OFREP, streams, metrics) read :meth:`Store.get` on the hot path and subscribe to
changes. The store knows nothing about where rules come from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proxy.model import Change, FlagSet, id_version, split_stream_id

log = logging.getLogger("flagedge.store")


Subscriber = Callable[[Change, FlagSet], None]
RECENT_STATES = 64  # (version, state id) published, per environment (catch_up: "is it ours?")
# How long a client naming a state we have not reached (a faster replica served it) waits
# for it: replicas of one Redis follow a write within milliseconds of each other.
CATCH_UP_S = 0.5


@dataclass(slots=True)
class SourceStatus:
    """Health of the source feeding one environment (or all of them, under env ``*``)."""

    connected: bool = False
    degraded_reason: str | None = None  # set while stale rules are served
    last_error: str | None = None
    # The source answered but what it holds cannot be served at all (an invalid flag file):
    # "invalid", not "unreachable", in /readyz and the 503 of an environment without rules.
    invalid: bool = False
    since: float = field(default_factory=time.time)


class Store:
    def __init__(self) -> None:
        self._sets: dict[str, FlagSet] = {}
        self._subscribers: list[Subscriber] = []
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._recent: dict[str, deque[tuple[int, str]]] = {}
        self.status: dict[str, SourceStatus] = {}
        self.rejected_total = 0  # flags or documents refused by validation
        # Why the source refuses its backing store (a Redis layout newer than this code):
        # the last good rules are still served, but /readyz says not ready, with this reason.
        self.refused: str | None = None

    # -- read side (hot path: plain dict lookups, no locks) --------------------------------
    def get(self, env: str) -> FlagSet | None:
        return self._sets.get(env)

    def envs(self) -> list[str]:
        return sorted(self._sets)

    @property
    def ready(self) -> bool:
        return bool(self._sets)

    def invalid(self, env: str | None = None) -> bool:
        """The source of ``env`` (of any environment: None) holds rules it cannot serve."""
        if env is not None:
            st = self.status.get(env)
            return st is not None and st.invalid
        return any(st.invalid for st in self.status.values())

    def rejected(self) -> int:
        """Flags served as errors or at their last good version, over every environment."""
        return sum(sum(1 for k in fs.rejected if k) for fs in self._sets.values())

    def degraded(self) -> dict[str, str]:
        """Environment (or ``*``) -> reason, for every source serving stale rules."""
        return {env: st.degraded_reason for env, st in self.status.items() if st.degraded_reason}

    # -- write side (sources) --------------------------------------------------------------
    def publish(self, env: str, flag_set: FlagSet, change: Change) -> None:
        """Swap in a new snapshot and tell every subscriber. Subscribers run synchronously and
        must not block: they enqueue work of their own."""
        self._sets[env] = flag_set
        recent = self._recent.get(env)
        if recent is None:
            recent = self._recent[env] = deque(maxlen=RECENT_STATES)
        recent.append((flag_set.version, flag_set.state_id))
        for subscriber in list(self._subscribers):
            try:
                subscriber(change, flag_set)
            except Exception:  # one broken subscriber must not stop the others
                log.exception("store subscriber failed", extra={"env": env})
        self._wake(env, flag_set.version)

    def remove(self, env: str) -> None:
        """Forget an environment (``flagedge envs delete``)."""
        old = self._sets.pop(env, None)
        self.status.pop(env, None)
        self._recent.pop(env, None)
        if old is not None:
            change = Change(env=env, version=old.version + 1, deleted=frozenset(old.flags), reset=True)
            empty = FlagSet(flags={}, version=change.version, epoch=old.epoch)
            for subscriber in list(self._subscribers):
                try:
                    subscriber(change, empty)
                except Exception:
                    log.exception("store subscriber failed", extra={"env": env})

    def set_status(self, env: str, *, connected: bool, degraded_reason: str | None = None,
                   error: str | None = None, invalid: bool = False) -> None:
        st = self.status.setdefault(env, SourceStatus())
        if st.connected != connected or st.degraded_reason != degraded_reason:
            st.since = time.time()
        st.connected, st.degraded_reason, st.invalid = connected, degraded_reason, invalid
        if error is not None:
            st.last_error = error

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register a change callback; returns a function that unregisters it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def wait_for_version(self, env: str, version: int, timeout: float) -> bool:
        """Wait until ``env`` reaches ``version`` (OFREP flagConfigEtag catch-up)."""
        current = self._sets.get(env)
        if current is not None and current.version >= version:
            return True
        return await self._wait(env, version, timeout)

    async def catch_up(self, env: str, state_id: str, timeout: float = CATCH_UP_S) -> None:
        """Wait at most ``timeout`` when a client names a state of ``env`` (a stream id, a
        notification's etag) that a faster replica served and this store has not yet: a
        newer version, or another write of a recent one (a re-publish or a failover that
        replica followed first: we published that version, never this state of it). What we
        publish next is then what it announced. No wait for a state we hold or held, an id
        that is no state, a bare number (older servers' ids), or a version we did not
        publish (before a restart, or older than the last RECENT_STATES): nothing tells
        another write of those apart, and a resuming client must not wait for nothing."""
        current = self._sets.get(env)
        state = split_stream_id(state_id)[0]  # a time interval is not a state
        wanted = id_version(state)
        if wanted is None or (current is not None and state == current.state_id):
            return
        if current is None or wanted > current.version:  # (None: no rules here yet)
            await self._wait(env, wanted, timeout)
        elif "-" in state and _another_write(self._recent.get(env, ()), wanted, state):
            await self._wait(env, -1, timeout)

    async def _wait(self, env: str, version: int, timeout: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(env, [])
        waiters.append((version, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if (version, fut) in waiters:
                waiters.remove((version, fut))

    def _wake(self, env: str, version: int) -> None:
        for wanted, fut in list(self._waiters.get(env, ())):
            if wanted <= version and not fut.done():
                fut.set_result(None)

    def versions(self) -> Iterable[tuple[str, int]]:
        return ((env, fs.version) for env, fs in self._sets.items())


def _another_write(recent: Iterable[tuple[int, str]], version: int, state: str) -> bool:
    """We published ``version`` (as one state or several: a reset) and never ``state``."""
    known = False
    for v, served in recent:
        if served == state:
            return False
        known = known or v == version
    return known
