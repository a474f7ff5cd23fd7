"""Helpers for tests that run a source task in the test's own event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (yielding to the loop) until truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return value


async def stop(task: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Cancel a source's ``run()`` and require that it really stops (a source that swallows
    its cancellation would hang the app's shutdown)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert done, f"source task still running {timeout}s after cancel"
    assert task.cancelled() or task.exception() is None, task.exception()
