"""The contract every rule source implements (Redis, file), and the type the runtime holds
them by (``server/app.py``: ``Runtime.sources: list[Source]``).

A source owns one long-running task: ``run()`` loads rules, publishes them into the
:class:`~proxy.store.Store` and follows changes until cancelled. It never raises for faults
of its backend: it reports them through ``store.set_status`` and keeps the last good rules
in service. The store knows nothing about sources. (flagd's ``isync.go`` has the same shape:
Sync, ReSync, IsReady; here the store a source publishes into is given to its constructor,
so ``run`` takes no ``apply`` callback.)
"""

from __future__ import annotations

import asyncio
import random
from typing import Protocol, runtime_checkable


@runtime_checkable
class Source(Protocol):
    """What the runtime uses of a source: ``ready`` for readiness, ``settled`` before it
    listens, ``secret`` for stream tokens, ``run``/``close`` in the lifespan; ``resync`` for
    a full reload."""

    #: Rules loaded at least once (from the backend or a bootstrap file).
    ready: bool
    #: Set once the first load was tried, whatever came of it: rules (and keys) in, or the
    #: backend's fault reported. The server listens after it (``server/app.py``).
    settled: asyncio.Event
    #: Bytes that sign stream tokens, shared by every replica (``flagedge:secret`` for Redis;
    #: a per-process random value offline). None until known.
    secret: bytes | None

    async def run(self) -> None:
        """Load and follow until cancelled. Never raises for backend faults."""

    async def resync(self) -> None:
        """Ask for a full reload of every environment (returns once it is requested)."""

    async def close(self) -> None:
        """Release connections; ``run`` should already be cancelled or is cancelled now."""


class Backoff:
    """Capped exponential backoff with jitter (each delay drawn from [d/2, d]):
    replicas that lost Redis together do not reconnect in lockstep."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
