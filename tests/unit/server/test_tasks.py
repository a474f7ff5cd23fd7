"""A worker's stop cancels its background tasks until they end, even one that loses a
cancel (Python 3.11's ``wait_for``: server/tasks.py), and never waits past its deadline."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.server.tasks import cancel_all


async def _loses_first_cancel(seen: list[str]) -> None:
    """A loop that swallows one cancellation, as a redis-py call inside ``wait_for`` can."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        seen.append("lost")  # carries on, as if the call had returned
    while True:
        await asyncio.sleep(0.5)


async def test_a_task_that_loses_a_cancel_is_cancelled_again() -> None:
    seen: list[str] = []
    task = asyncio.create_task(_loses_first_cancel(seen), name="notify")
    await asyncio.sleep(0)
    left = await asyncio.wait_for(cancel_all([task]), timeout=2)
    assert seen == ["lost"]
    assert left == [] and task.cancelled()


async def test_one_cancel_alone_would_not_stop_it() -> None:
    """The failure the module exists for: cancel() once, then wait."""
    seen: list[str] = []
    task = asyncio.create_task(_loses_first_cancel(seen))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout=0.3)
    assert not task.done()
    await cancel_all([task])


async def test_a_task_that_never_stops_is_named_and_left_at_the_deadline(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)  # running: a task cancelled before its first step just ends
    with caplog.at_level(logging.ERROR, logger="flagedge.app"):
        left = await cancel_all([task], deadline_s=0.3)
    assert left == [task] and not task.done()
    assert "stubborn" in caplog.text and "did not stop" in caplog.text
    release.set()
    await task


async def test_finished_and_failed_tasks_are_consumed_quietly() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    assert await cancel_all([done, failed]) == []
