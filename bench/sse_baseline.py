"""The baseline of bench/sse.py: the least an SSE server following flagedge's Redis can do.

A bare Starlette app under uvicorn (uvloop, httptools, one worker, like ``flagedge serve``)
with the three stream URLs. One task follows the environment's change stream
(``flagedge:{ENV}:changes``) with a blocking ``XREAD``, as flagedge's Redis source does, and on
each entry wakes every stream through one shared ``asyncio.Event``; each stream is the obvious
async generator under ``StreamingResponse`` and yields its frame. No auth, no store, no
evaluation, no queues: what is left is HTTP, the event loop and one Redis follower, so
flagedge / baseline is what flagedge's own machinery costs.

The frame is ``payload`` bytes long (bench/sse.py passes the size flagedge's frame had in the
same run). ``per_client``: each stream builds its own frame (its own bytes, the evaluated
stream's shape: one result per context), else all share one (events and rules streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

EVENTS = {"events": b"message", "rules": b"patch", "evaluated": b"patch"}


def frame(event: bytes, event_id: bytes, size: int, filler: bytes = b"") -> bytes:
    """An SSE event of ``size`` bytes (at least its fixed part) whose data starts with
    ``filler``."""
    head = b"event: %b\nid: %b\ndata: " % (event, event_id)
    pad = max(0, size - len(head) - 2 - len(filler))
    return head + filler + b"x" * pad + b"\n\n"


class Changes:
    """The newest change-stream entry id, and one event per entry that every stream awaits."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.entry_id = b"0-0"

    def publish(self, entry_id: bytes) -> None:
        self.entry_id = entry_id
        event, self.event = self.event, asyncio.Event()
        event.set()


async def follow(redis_url: str, key: str, changes: Changes) -> None:
    """XREAD BLOCK on the change stream from its end, like flagedge's source."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    last: bytes | str = "$"
    try:
        while True:
            reply = await client.xread({key: last}, block=2000)
            for _stream, entries in reply or ():
                for entry_id, _fields in entries:
                    last = entry_id
                    changes.publish(entry_id)
    finally:
        await client.aclose()


def app(redis_url: str, env: str, payload: int, per_client: bool):  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    changes = Changes()

    def stream(kind: str):
        event = EVENTS[kind]

        async def endpoint(request: Request) -> StreamingResponse:
            filler = request.url.query.encode() if per_client else b""

            async def events() -> AsyncIterator[bytes]:
                yield b"retry: 3000\n\n"
                while True:
                    wake = changes.event
                    await wake.wait()
                    if per_client:
                        yield frame(event, changes.entry_id, payload, filler)
                    else:
                        yield shared(changes.entry_id)

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})

        cache: dict[bytes, bytes] = {}

        def shared(entry_id: bytes) -> bytes:
            if entry_id not in cache:
                cache.clear()
                cache[entry_id] = frame(event, entry_id, payload)
            return cache[entry_id]

        return endpoint

    async def health(_request: Request) -> Response:
        return Response(b"ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        from proxy.storage.layout import changes_key

        task = asyncio.create_task(follow(redis_url, changes_key(env), changes))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return Starlette(routes=[Route("/ofrep/v1/events", stream("events")),
                             Route("/v1/stream/rules", stream("rules")),
                             Route("/v1/stream/evaluated", stream("evaluated")),
                             Route("/healthz", health)], lifespan=lifespan)


def serve(port: int, redis_url: str, env: str, payload: int, per_client: bool
          ) -> None:  # pragma: no cover
    import uvicorn
    from benchutil import raise_nofile

    raise_nofile()
    uvicorn.run(app(redis_url, env, payload, per_client), host="127.0.0.1", port=port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning")
