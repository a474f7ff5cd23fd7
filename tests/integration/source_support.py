"""Helpers for tests that run a source task in the test's own event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.waiting import until

__all__ = ["stop", "until"]


async def stop(task: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Cancel a source's ``run()`` and require that it really stops (a source that swallows
    its cancellation would hang the app's shutdown)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert done, f"source task still running {timeout}s after cancel"
    assert task.cancelled() or task.exception() is None, task.exception()
