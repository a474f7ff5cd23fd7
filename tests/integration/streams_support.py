"""Helpers for the stream tests: a real SSE client (httpx-sse) read in a task, with deadlines,
and the state ids (``VERSION-TAG``) the streams carry."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import httpx
import orjson
from httpx_sse import ServerSentEvent, aconnect_sse

from proxy.model import id_version, state_id
from proxy.storage.layout import changes_key

DOC: dict[str, Any] = {
    "flags": {
        "banner": {
            "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]},
        },
        "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
                  "defaultVariant": "red"},
    }
}


# The server's default boundary_jitter: it tells each stream of a time boundary at a random
# point within this many seconds of the boundary, by its own clock.
BOUNDARY_JITTER_S = 3.0
# What a client may see on top of that on a loaded machine: a suite on 2 cores once had no
# notification within a second past the jitter (not reproduced alone or beside the browser
# tests: 0.4-2.6 s). The tests wait this long so that they fail on a lost notification, not
# a late one; the spread within the jitter is checked in process
# (tests/unit/streams/test_boundaries.py).
BOUNDARY_SLACK_S = 15.0


def until_told(boundary: float) -> float:
    """Seconds from now to wait for the notification of the boundary at ``boundary``."""
    return boundary + BOUNDARY_JITTER_S + BOUNDARY_SLACK_S - time.time()


def doc_with(**flags: Any) -> dict[str, Any]:
    """DOC with some flags replaced or added (a value of None removes the flag)."""
    out = dict(DOC["flags"])
    for key, value in flags.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return {"flags": out}


def color(default: str) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"red": "red", "blue": "blue", "green": "green"},
            "defaultVariant": default}


def b64_context(context: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(context)).rstrip(b"=").decode()


class Stream:
    """One open SSE stream; events (id-only / retry-only frames included) land in a queue."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, key: str | None = None,
                 params: dict[str, str] | None = None, last_event_id: str | None = None):
        self.client, self.url, self.params = client, url, params
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = last_event_id
        self.events: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self.status: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async with aconnect_sse(self.client, "GET", self.url, headers=self.headers,
                                    params=self.params) as source:
                self.status = source.response.status_code
                self.opened.set()
                source.response.raise_for_status()
                async for sse in source.aiter_sse():
                    self.events.put_nowait(sse)
        except Exception as exc:  # reported to the test
            self.error = exc
        finally:
            self.opened.set()
            self.ended.set()

    async def __aenter__(self) -> Stream:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.opened.wait()
        if self.status != 200:
            raise AssertionError(f"stream {self.url} answered {self.status}: {self.error}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def next(self, timeout: float = 10.0, *, data_only: bool = True) -> ServerSentEvent:
        """The next event; by default skips frames without data (retry / id-only)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.events.empty() and self.ended.is_set():
                    raise AssertionError(f"stream ended ({self.error!r}) while waiting for an event")
                get = asyncio.create_task(self.events.get())
                ended = asyncio.create_task(self.ended.wait())
                done, _ = await asyncio.wait({get, ended}, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                if get in done:
                    sse = get.result()
                    if sse.data or not data_only:
                        return sse
                else:
                    get.cancel()

    async def take(self, n: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        return [await self.next(timeout) for _ in range(n)]

    async def wait_ended(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self.ended.wait()


def data(sse: ServerSentEvent) -> Any:
    return orjson.loads(sse.data)


def vid(event: ServerSentEvent) -> int | None:
    """The version number named by an event's id (a state id ``VERSION-TAG``); None when the
    event has no id or it names no version."""
    return id_version(event.id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def state_id_in_redis(redis_client: Any, env: str, version: int) -> str:
    """The state id every proxy serves for ``version`` of ``env``, worked out from Redis alone:
    the change-stream entry that wrote that version names its revision (the entry's XADD id)
    and its epoch (the entry's ``epoch`` field). Read newest first, a page at a time (entries
    carry whole documents); fails when the stream no longer holds that version (trimmed)."""
    key, upper, count = changes_key(env), "+", 1  # the newest entry is the usual answer
    while True:
        page = redis_client.xrevrange(key, max=upper, count=count)
        for entry_id, fields in page:
            f = {_text(k): v for k, v in fields.items() if _text(k) in ("version", "epoch")}
            if _text(f.get("version", "")) == str(version):
                return state_id(version, _text(f.get("epoch", "")), _text(entry_id))
        if len(page) < count:
            raise AssertionError(f"no entry of version {version} in {key}")
        upper, count = "(" + _text(page[-1][0]), 50


async def push(server: Any, doc: dict[str, Any]) -> int:
    """Publish through Redis (as `flagedge push` does) and wait until the proxy serves it."""
    return await asyncio.to_thread(server.push, doc)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` carrying ``labels`` (any label order) in /metrics text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
