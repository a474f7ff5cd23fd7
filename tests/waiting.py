"""Waiting on a condition with a deadline: the one way tests synchronise (never a bare sleep).

``until`` is for async tests (the predicate may be sync or async; ``interval=0`` yields one
loop iteration per check, for conditions that move with the loop's callbacks);
``wait_until`` is its blocking twin for sync tests and helper threads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
                interval: float = 0.005) -> Any:
    """Await ``predicate`` truthy and return its value, or raise TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
