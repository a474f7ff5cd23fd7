"""A worker's background tasks stop at any moment of their Redis calls (server/tasks.py):
the webhook notifier against a real redis-server, cancelled at random points of its first
milliseconds, where a fresh client opens its connection and Python 3.11's ``wait_for`` can
lose a single cancel (about one in five in that window; with one cancel this test fails).
The Redis source keeps its own stop flag (sources/redis.py) and needs no second cancel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
import redis

from proxy.release.notify import Notifier, NotifyConfig
from proxy.server.tasks import cancel_all
from proxy.storage import layout
from proxy.storage.url import async_client

pytestmark = pytest.mark.integration

ROUNDS = 120


async def _stops_every_time(start: Callable[[Any], Any], url: str) -> list[float]:
    """Start a task ROUNDS times and stop it after 0 to 15 ms; the delays of the stuck ones."""
    rng = random.Random(7)
    stuck = []
    for _ in range(ROUNDS):
        client = async_client(url)
        task = asyncio.create_task(start(client))
        delay = rng.random() * 0.015
        await asyncio.sleep(delay)
        if await cancel_all([task], deadline_s=2.0):
            stuck.append(delay)
            await _end(task)  # so that a regression fails here instead of hanging teardown
        await client.aclose()
    return stuck


async def _end(task: asyncio.Task[Any]) -> None:
    for _ in range(500):
        if task.done():
            return
        task.cancel()
        await asyncio.sleep(0.01)


async def test_the_notifier_stops_whenever_it_is_told(redis_server: Any) -> None:
    redis.Redis.from_url(redis_server.url).sadd(layout.ENVS, "test")

    def start(client: Any) -> Any:
        return Notifier(client, NotifyConfig(poll=0.05)).run()

    assert await _stops_every_time(start, redis_server.url) == []

