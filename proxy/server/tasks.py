"""Stopping a worker's background tasks, even ones that lose a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the inner result when a cancellation arrives in
the same loop turn as that result (CPython gh-86296, fixed in 3.12). redis-py connects
through ``wait_for``, so a task cancelled while it opens a Redis connection can swallow the
cancel and carry on with its loop: a ``cancel()`` followed by ``gather`` then waits forever.
Measured: one cancel in five, at a random moment in the first 20 ms of the notifier's run,
was lost; a ``serve --workers 2`` stop hung in CI on it.

So a stop cancels again, every ``RECANCEL_S``, whatever is still running (as anyio's cancel
scopes do), and gives up after a deadline, naming the tasks it left behind, so a shutdown
always ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("flagedge.app")

RECANCEL_S = 0.1  # how often a task that is still running is cancelled again
STOP_DEADLINE_S = 5.0  # then the stop goes on without it (serve's graceful budget is 10 s)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], *,
                     deadline_s: float = STOP_DEADLINE_S) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` until every one has finished or ``deadline_s`` has passed; returns
    (and logs) the ones still running then. Their results and exceptions are consumed."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while pending and loop.time() < end:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S,
                                                                 end - loop.time()))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    if pending:
        log.error("shutdown: %d background task(s) did not stop within %.0f s: %s",
                  len(pending), deadline_s, ", ".join(sorted(t.get_name() for t in pending)))
    return sorted(pending, key=lambda t: t.get_name())
