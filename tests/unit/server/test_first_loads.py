"""The server listens once every source has tried its first load, and not later than a bound
(``proxy.server.app._first_loads``)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from proxy.server.app import _first_loads


class _Source:
    def __init__(self) -> None:
        self.settled = asyncio.Event()


async def test_it_returns_when_the_last_source_has_settled() -> None:
    first, second = _Source(), _Source()
    waiting = asyncio.ensure_future(_first_loads([first, second], 30.0))  # type: ignore[list-item]
    first.settled.set()
    await asyncio.sleep(0)
    assert not waiting.done()
    second.settled.set()
    await asyncio.wait_for(waiting, 5.0)


async def test_a_source_that_never_settles_keeps_the_port_closed_only_so_long(
        caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "flagedge.app"):
        await _first_loads([_Source()], 0.05)  # type: ignore[list-item]
    assert time.monotonic() - started < 5.0
    assert "listening before the first load finished" in caplog.text


async def test_no_sources_no_wait() -> None:
    await asyncio.wait_for(_first_loads([], 30.0), 1.0)
