"""Chaos fixtures: the integration fixtures (real redis-server, real `flagedge serve`) plus a
bounded asyncio evaluation load, stream recorders and small HTTP probes with deadlines.

The load is paced (a fixed request rate over a few concurrent loops), never flat out: the
machine has two cores shared with redis-server, the proxy and the test itself, and the
latency comparisons need the proxy not saturated by its own load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import redis

from proxy.model import id_version
from proxy.release import publisher
from proxy.release.changeset import Document
from tests import waiting
from tests.integration.conftest import ProxyServer, proxy_factory, proxy_server  # noqa: F401
from tests.integration.streams_support import Stream


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
                interval: float = 0.02) -> Any:
    """:func:`tests.waiting.until` with the chaos suite's longer defaults."""
    return await waiting.until(predicate, timeout, what, interval)


async def replicated(writer: Any, timeout: float = 30.0) -> None:
    """Until the replica acknowledges every write ``writer`` made. Each ``WAIT`` blocks at most
    half a second, well inside redis-py's 5 s socket timeout (a ``WAIT 1 5000`` raced it,
    and a replica slow to answer on a loaded machine failed the test at exactly 5 s)."""
    await until(lambda: writer.execute_command("WAIT", 1, 500) >= 1, timeout,
                "the replica acknowledging the writes")


def metric(text: str, name: str, **labels: str) -> float | None:
    """Sum of a Prometheus sample's values matching ``labels``; None when absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


async def ready_state(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    """(status code, body) of /readyz; (0, {}) when the proxy does not answer."""
    try:
        r = await client.get("/readyz", timeout=2.0)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


def push(url: str, env: str, doc: dict[str, Any]) -> int:
    """Publish as `flagedge push` does, with a client of its own (the test's Redis may have
    been restarted since any earlier client connected). Returns the new version."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        return publisher.push(client, env, Document.from_json(doc), author="chaos").version
    finally:
        client.close()


@dataclass(slots=True)
class Sample:
    started: float  # loop time the request was sent
    latency: float  # seconds until the answer (or the failure)
    status: int  # HTTP status; 0 when no response arrived
    error: str = ""
    body: Any = None


@dataclass
class Load:
    """``workers`` loops, each POSTing one OFREP evaluation every ``1/rate`` seconds
    (``rate`` per loop), each request bounded by ``timeout``. Every outcome is recorded."""

    url: str
    key: str | None
    flag: str
    workers: int = 4
    rate: float = 50.0
    timeout: float = 5.0
    context: dict[str, Any] = field(default_factory=lambda: {"targetingKey": "chaos-user"})
    samples: list[Sample] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Load:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=self.timeout,
            limits=httpx.Limits(max_connections=self.workers,
                                max_keepalive_connections=self.workers))
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._client is not None
        body = orjson.dumps({"context": self.context})
        path = f"/ofrep/v1/evaluate/flags/{self.flag}"
        interval = 1.0 / self.rate
        next_at = loop.time()
        while True:
            started = loop.time()
            try:
                r = await self._client.post(path, content=body,
                                            headers={"Content-Type": "application/json"})
                sample = Sample(started, loop.time() - started, r.status_code,
                                body=r.json() if r.content else None)
            except httpx.HTTPError as exc:
                sample = Sample(started, loop.time() - started, 0,
                                error=f"{type(exc).__name__}: {exc}")
            self.samples.append(sample)
            # Pacing, not synchronisation: keep the request rate fixed.
            next_at = max(next_at + interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    # -- reading the record -----------------------------------------------------------------
    def mark(self) -> int:
        return len(self.samples)

    def since(self, mark: int, until_mark: int | None = None) -> list[Sample]:
        return self.samples[mark:until_mark]

    def failures(self, samples: list[Sample] | None = None) -> list[Sample]:
        return [s for s in (self.samples if samples is None else samples) if s.status != 200]

    async def wait_more(self, n: int, timeout: float = 10.0) -> None:
        target = len(self.samples) + n
        await until(lambda: len(self.samples) >= target, timeout, f"{n} more evaluations")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Recorder:
    """An open SSE stream whose events are all kept (in order) for gap checks."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.events: list[Any] = []

    def ids(self) -> list[int]:
        """Versions of the data events received so far (frames with data and an id), read
        from their state ids (``VERSION-TAG``); an id naming no version fails the test."""
        versions = [id_version(e.id) for e in self.events if e.data and e.id]
        assert None not in versions, [e.id for e in self.events]
        return versions  # type: ignore[return-value]

    def state_ids(self) -> list[str]:
        """The raw state ids of the data events received so far (what a client resumes with)."""
        return [e.id for e in self.events if e.data and e.id]

    def retry_hints(self) -> list[int]:
        return [e.retry for e in self.events if e.retry is not None]

    async def drain_until(self, version: int, timeout: float = 10.0) -> list[int]:
        """Collect events until one carries id ``version`` (or later)."""
        deadline = time.monotonic() + timeout
        while not any(i >= version for i in self.ids()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.stream.url}: no event with id {version}; "
                                   f"got {self.ids()}")
            self.events.append(await self.stream.next(left, data_only=False))
        return self.ids()

    def drain_now(self) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self.events.append(self.stream.events.get_nowait())


@pytest.fixture
async def http():
    """An async client factory for one server; everything is closed at the end."""
    clients: list[httpx.AsyncClient] = []

    def make(server: ProxyServer, key: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.AsyncClient(base_url=server.url, headers=headers,
                              timeout=kw.pop("timeout", httpx.Timeout(5.0, read=None)), **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()
