"""Garbage collection on a clock (proxy/server/gcpolicy.py): passes come from the clock, not from
whichever request allocated the 700th object; a burst still starts one; the thresholds come
back when the clock stops. Collections are observed through ``gc.callbacks``."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.config import Settings, SettingsError, validate
from proxy.server import gcpolicy
from tests.unit.ofrep_app import App
from tests.waiting import until


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The generation of every collection that starts while the test runs."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_clock_collects_the_young_generations_every_period(passes: list[int]) -> None:
    clock = asyncio.create_task(gcpolicy.collect_on_clock(0.02))
    try:
        await until(lambda: passes.count(1) >= 3, timeout=5, what="three clock passes")
    finally:
        await stopped(clock)


async def test_allocations_between_ticks_start_no_pass(passes: list[int]) -> None:
    clock = asyncio.create_task(gcpolicy.collect_on_clock(3600))
    await asyncio.sleep(0)  # the clock task sets its threshold on its first step
    try:
        kept = [{"i": i} for i in range(5_000)]  # 7x CPython's default threshold of 700
        assert len(kept) == 5_000
        assert passes == []
    finally:
        await stopped(clock)


async def test_a_burst_past_the_safety_net_still_starts_a_pass(passes: list[int]) -> None:
    clock = asyncio.create_task(gcpolicy.collect_on_clock(3600))
    await asyncio.sleep(0)
    try:
        kept = [{"i": i} for i in range(3 * gcpolicy.SAFETY_NET + 2_000)]
        assert len(kept) > 3 * gcpolicy.SAFETY_NET
        # Each SAFETY_NET allocations a pass; every second one takes generation 1 as well, so
        # the next tick never walks the whole burst at once.
        assert 0 in passes and 1 in passes
    finally:
        await stopped(clock)


async def test_a_full_pass_comes_when_the_old_generation_has_grown_by_a_quarter(
        passes: list[int]) -> None:
    clock = asyncio.create_task(gcpolicy.collect_on_clock(0.01, full_period=0.01))
    try:  # every tick considers a full pass
        await until(lambda: 2 in passes, timeout=5, what="the first full pass")
        ticks = passes.count(1)
        await until(lambda: passes.count(1) >= ticks + 5, timeout=5, what="five more ticks")
        assert passes.count(2) == 1  # nothing new in the old generation: young passes only
        kept = [[i] for i in range(gcpolicy.old_size() // 2)]  # promoted by the next ticks
        await until(lambda: passes.count(2) == 2, timeout=5, what="a second full pass")
        assert kept
    finally:
        await stopped(clock)


async def test_the_thresholds_come_back_when_the_clock_stops(passes: list[int]) -> None:
    gc.set_threshold(700, 10, 10)
    clock = asyncio.create_task(gcpolicy.collect_on_clock(3600))
    await asyncio.sleep(0)
    assert gc.get_threshold() == (gcpolicy.SAFETY_NET, gcpolicy.SAFETY_NET_YOUNG,
                                  gcpolicy.SAFETY_NET_FULL)
    await stopped(clock)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize(("period", "clocked"), [(2.0, True), (0.0, False)])
async def test_serve_collects_on_a_clock_unless_gc_period_is_0(
        passes: list[int], period: float, clocked: bool) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    app = App(Settings(env="test", gc_period=period))
    async with app.app.router.lifespan_context(app.app):
        await asyncio.sleep(0)
        names = {task.get_name() for task in app.runtime.tasks}
        assert ("gc-clock" in names) is clocked
        # Clocked: the safety net. Automatic: CPython's schedule, full passes 10x rarer.
        assert gc.get_threshold() == ((gcpolicy.SAFETY_NET, gcpolicy.SAFETY_NET_YOUNG,
                                       gcpolicy.SAFETY_NET_FULL) if clocked
                                      else (700, 10, 100))
        assert gc.get_freeze_count() > 0  # startup's objects are out of every pass
    gc.unfreeze()  # the lifespan froze the test process's objects


def test_a_negative_gc_period_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="gc_period"):
        validate(Settings(gc_period=-1))
