"""Garbage collection on a clock rather than on allocation counts.

By default CPython starts a young-generation pass every 700 net allocations of container
objects. Such a pass runs inside whatever allocated last, a request most of the time, and
holds up every request queued behind it. In a storm of rule changes each new flag's compiled
objects are live, so the passes walk them, and a generation-1 pass every ~2 s walks them
again: in ``bench/soak.py`` the storm windows came out slower at p99 than the quiet ones in
59 of 72 pairs; with the collector switched off, in 10 of 24, and on this clock in 48 of 72
(A/A: 21 of 48), every run's p99 inside the A/A range.

So the server collects on a clock: generations 0 and 1 every ``period`` seconds from a task,
and the whole heap when a ``FULL_PERIOD_S`` check finds the old generation grown by a
quarter. A pass only walks what is still alive, so one pass every 2 s costs about what the
dozen it replaces did together, and far fewer requests meet one. The allocation threshold
stays, raised, as a safety net: a burst of allocations between two ticks (a thousand
streams opening at once, a large ruleset loading) still starts a pass every
``SAFETY_NET`` allocations, and every second such pass takes generation 1 too, so what the
next tick walks stays bounded (without that, the tick after a thousand streams opened
walked them all: one 35 ms pass). docs/streams.md (seventh pass) has the numbers.
"""

from __future__ import annotations

import asyncio
import gc

SAFETY_NET = 10_000  # net container allocations that still start a pass between two ticks
SAFETY_NET_YOUNG = 1  # safety passes before one also collects generation 1 (CPython: 10)
SAFETY_NET_FULL = 100  # generation-1 passes (ticks too) before a safety pass is a full one
FULL_PERIOD_S = 300.0  # how often a full pass is considered (~7 ms with 1,000 open streams)
FULL_GROWTH = 1.25  # ... and run when the old generation grew this much since the last one


def settle() -> None:
    """Once, after startup: collect, then keep what startup allocated (modules, routes,
    compiled code; it lives as long as the process) out of every later pass."""
    gc.collect()
    gc.freeze()


def automatic() -> None:
    """CPython's own schedule (``gc_period = 0``), with a full pass considered every 100
    generation-1 passes instead of every 10: a full pass walks every object."""
    gc.set_threshold(*gc.get_threshold()[:2], 100)


def safety_net() -> None:
    """The allocation thresholds between two ticks of the clock (see the module docstring);
    in-process benchmarks set them too, to measure what the server runs."""
    gc.set_threshold(SAFETY_NET, SAFETY_NET_YOUNG, SAFETY_NET_FULL)


async def collect_on_clock(period: float, full_period: float = FULL_PERIOD_S) -> None:
    """Run until cancelled (a task): generations 0-1 every ``period`` seconds. Every
    ``full_period`` seconds, the whole heap too if the old generation has grown by a quarter
    since the last full pass (CPython's own rule: a full pass walks everything, so it waits
    until there is enough new to be worth it). The previous thresholds come back when it ends."""
    before = gc.get_threshold()
    safety_net()
    full_every = max(1, round(full_period / period))
    old_after_full = 0  # objects in generation 2 after the last full pass
    tick = 0
    try:
        while True:
            await asyncio.sleep(period)
            tick += 1
            if tick % full_every == 0 and old_size() > old_after_full * FULL_GROWTH:
                gc.collect(2)
                old_after_full = old_size()
            else:
                gc.collect(1)
    finally:
        gc.set_threshold(*before)


def old_size() -> int:
    """Objects in the old generation (frozen ones excluded). One pass over a list, no
    traversal: a small fraction of what a full collection costs."""
    return len(gc.get_objects(generation=2))
