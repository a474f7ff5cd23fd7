"""SSE endpoints (DESIGN §5) and the polled rules document.

- ``GET /ofrep/v1/events``: OFREP ADR-0008 change notifications (``refetchEvaluation``).
- ``GET /v1/stream/evaluated?context=BASE64URL_JSON`` (client keys): ``put`` with the bulk
  OFREP result for the context, then ``patch``/``delete`` with only what changed for it.
- ``GET /v1/stream/rules`` (server keys): ``put`` with the flagd document, then ``patch``
  (flags, ``$evaluators``, metadata) and ``delete``.
- ``GET /v1/rules`` (server keys): the same document with an ETag, for pollers.

Every stream: ``id:`` is the environment's state id (``VERSION-TAG``, the tag naming its
epoch and write: :func:`proxy.model.state_id`), ``Last-Event-ID`` resumes, a ``retry:``
hint comes first, a heartbeat comment every 15 s, auth by header or ``?key=`` (client keys
only); a signed ``?token=`` opens the events stream only (``proxy.api.tokens``).
Per-connection queues and coalescing live in :mod:`proxy.streams.fanout`; the fan-out (and
the Redis client of its resume history) is built by ``proxy.server.app`` and handed in. Query
strings (keys, tokens, contexts) are never logged here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from proxy.api import errors
from proxy.api.auth import Authenticator
from proxy.api.client_address import limit_key
from proxy.api.context import BadContext, check_context
from proxy.api.metrics import Metrics
from proxy.api.tokens import EVENTS
from proxy.api.transport import body_writer, connection_transport
from proxy.config import Settings
from proxy.keys import KeyRecord, KeyRing
from proxy.model import ErrorCode, FlagSet
from proxy.store import Store
from proxy.streams.connection import CapExceeded, Connection, StreamKind
from proxy.streams.fanout import FanOut, yield_to_requests
from proxy.streams.frames import PING, PROPAGATION_BUCKETS

log = logging.getLogger("flagedge.streams")

RETRY_MS = 3000  # reconnect hint sent first on every stream
PING_S = 15  # heartbeat comment interval
SHUTDOWN_POLL_S = 0.25  # how often the one shutdown watcher looks at the server
CAP_RETRY_AFTER_S = 5
MAX_CONTEXT_PARAM = 16 * 1024  # characters of ?context= (base64url)

_NEED = {StreamKind.EVENTS: "client", StreamKind.EVALUATED: "client", StreamKind.RULES: "server"}
_TOKEN_SCOPE = {StreamKind.EVENTS: EVENTS}  # the streams a ?token= may open


def decode_context(text: str | None, max_depth: int, max_items: int) -> dict[str, Any]:
    """``?context=`` is base64url (padding optional) of a JSON object. Raises BadContext."""
    if not text:
        return {}
    if len(text) > MAX_CONTEXT_PARAM:
        raise BadContext(ErrorCode.INVALID_CONTEXT,
                         f"context parameter longer than {MAX_CONTEXT_PARAM} characters")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        context = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadContext(ErrorCode.PARSE_ERROR,
                         "context must be base64url-encoded JSON (an object)") from None
    if not isinstance(context, dict):
        raise BadContext(ErrorCode.INVALID_CONTEXT, "context must be a JSON object")
    check_context(context, max_depth, max_items)
    return context


MAX_EVENT_ID = 64  # our ids are ~20 characters; a longer one is nobody's state


def last_event_id(request: Request) -> str | None:
    """``Last-Event-ID`` (EventSource sends it on reconnect), or None when the client sends
    none. Any other text is a state we do not know: the resume answers it with a fresh
    snapshot (a notification on the events stream), never with silence."""
    text = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    if not text:
        return None
    return text.strip()[:MAX_EVENT_ID]


class StreamsApi:
    """The stream endpoints over a built fan-out (``proxy.server.app`` wires it); streams of a
    key end when the key ring says it was revoked or changed."""

    def __init__(self, store: Store, auth: Authenticator, fanout: FanOut, *, settings: Settings,
                 keyring: KeyRing | None = None, metrics: Metrics | None = None):
        self.store = store
        self.auth = auth
        self.keyring = keyring
        self.settings = settings
        self.fanout = fanout
        self._send_buffer = settings.sse_send_buffer
        self._max_depth = settings.max_context_depth
        self._max_items = settings.max_context_items
        self._unsubscribe_keys: Callable[[], None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._doc_cache: tuple[FlagSet, bytes] | None = None
        self._hot = metrics.hot if metrics is not None else None
        if metrics is not None:
            metrics.registry.register(_StreamsCollector(self.fanout))  # type: ignore[arg-type]

    def routes(self) -> list[Route]:
        return [
            # Plain ASGI endpoints: Starlette's request/exception wrappers would otherwise stay
            # on the stack (and in memory) for the whole life of every stream.
            Route("/ofrep/v1/events", _Endpoint(self, StreamKind.EVENTS), methods=["GET"]),
            Route("/v1/stream/evaluated", _Endpoint(self, StreamKind.EVALUATED),
                  methods=["GET"]),
            Route("/v1/stream/rules", _Endpoint(self, StreamKind.RULES), methods=["GET"]),
            Route("/v1/rules", self.rules_document, methods=["GET"]),
        ]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the store and the key ring. Needs no running loop: the fan-out makes
        its tasks when changes arrive, the shutdown watcher with the first stream."""
        self.fanout.start()
        if self.keyring is not None:
            self._unsubscribe_keys = self.keyring.subscribe(self._on_key_changed)

    def _watch(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(self._watcher())

    async def stop(self) -> None:
        if self._unsubscribe_keys is not None:
            self._unsubscribe_keys()
            self._unsubscribe_keys = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
        await self.fanout.stop()

    async def _watcher(self) -> None:
        """One task per process, not per stream: heartbeats every PING_S, and when uvicorn
        starts shutting down, every stream ended with a proper final chunk (clean close)."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + PING_S
        while not server_exiting():
            await asyncio.sleep(SHUTDOWN_POLL_S)
            if loop.time() >= next_ping:
                next_ping = loop.time() + PING_S
                await self.fanout.heartbeat()
        n = 0
        for conn in list(self.fanout.connections()):
            conn.close("shutdown")
            n += 1
        log.info("server shutting down: closed %d streams", n)

    def _on_key_changed(self, record: KeyRecord) -> None:
        n = self.fanout.close_key(record.id, "key revoked or changed")
        if n:
            log.info("closed %d streams of key %s (revoked or changed)", n, record.id)

    # -- endpoints --------------------------------------------------------------------------
    async def _open(self, request: Request, kind: StreamKind) -> Response:
        principal = self.auth.authorize(request, _NEED[kind], stream=True,
                                        token_scope=_TOKEN_SCOPE.get(kind))
        if isinstance(principal, Response):
            return principal
        context = None
        if kind is StreamKind.RULES and self._hot is not None:  # evaluates elsewhere (§11)
            self._hot.note_usage(principal.env, "consumers", principal.key_id)
        if kind is StreamKind.EVALUATED:
            try:
                context = decode_context(request.query_params.get("context"), self._max_depth,
                                         self._max_items)
            except BadContext as exc:
                return errors.ofrep_error(400, exc.code, exc.details)
        last_id = last_event_id(request) if request.method != "HEAD" else None
        if last_id is not None:
            # A faster replica sent it a state we have not reached: wait briefly, so that
            # the resume neither tells an older state again nor then the one it holds.
            await self.store.catch_up(principal.env, last_id)
        try:
            conn = self.fanout.open(principal.env, kind, principal.key_id, context,
                                    limit_key(request.scope))
        except CapExceeded as exc:
            if exc.status == 429:
                return errors.ofrep_error(429, "TOO_MANY_STREAMS", exc.reason,
                                          headers={"Retry-After": str(CAP_RETRY_AFTER_S)})
            return errors.unavailable(exc.reason, CAP_RETRY_AFTER_S)
        if request.method == "HEAD":  # headers only (released when sent): nothing to replay
            return StreamResponse(self.fanout, conn, b"", self._send_buffer)
        try:
            # What it is owed is computed after the requests that arrived meanwhile: a wave
            # of (re)connecting streams must not hold up evaluations (bench/resume_storm.py).
            await yield_to_requests()
            first = await self.fanout.initial(conn, last_id)
        except BaseException:
            self.fanout.release(conn)
            raise
        self._watch()
        return StreamResponse(self.fanout, conn, first, self._send_buffer)

    async def rules_document(self, request: Request) -> Response:
        principal = self.auth.authorize(request, "server")
        if isinstance(principal, Response):
            return principal
        fs = self.store.get(principal.env)
        if fs is None:
            return errors.unavailable("no rules loaded yet for this environment")
        etag = f'"{fs.state_id}"'
        headers = {"ETag": etag, "X-Flagedge-Version": str(fs.version),
                   "Cache-Control": "no-cache"}
        inm = request.headers.get("if-none-match")
        if inm is not None and any(t.strip().removeprefix("W/") in (etag, "*")
                                   for t in inm.split(",")):
            return Response(status_code=304, headers=headers)
        cached = self._doc_cache
        if cached is None or cached[0] is not fs:
            cached = self._doc_cache = (fs, orjson.dumps(fs.to_document()))
        return Response(cached[1], media_type=errors.JSON_TYPE, headers=headers)


def server_exiting() -> bool:
    """uvicorn is shutting down: sse-starlette's hook on ``Server.handle_exit`` saw a signal,
    or the server behind the SIGTERM handler says so (how sse-starlette itself checks)."""
    if AppStatus.should_exit:
        return True
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


class _Endpoint:
    def __init__(self, api: StreamsApi, kind: StreamKind):
        self.api, self.kind = api, kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.api._open(Request(scope, receive), self.kind)
        await response(scope, receive, send)


class _NoBody:
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_NO_BODY = _NoBody()
_HEADERS: list[tuple[bytes, bytes]] = []  # the same for every stream: built once, shared




class StreamResponse(EventSourceResponse):
    """sse-starlette's response (SSE headers, no-store, X-Accel-Buffering, HEAD without a
    stream) driven by our connection queue with a lean per-connection footprint.

    The stock ``__call__`` runs an anyio task group of four tasks per connection (sender,
    ping, shutdown listener, disconnect listener): measured at ~41 KB RSS per idle stream,
    twice the 20 KB budget. Here the request task sends, one plain task waits for the
    disconnect, and one watcher per process sends heartbeats and handles shutdown
    (:meth:`StreamsApi._watcher`)."""

    def __init__(self, fanout: FanOut, conn: Connection, first: bytes, send_buffer: int = 0):
        super().__init__(_NO_BODY, ping=0)
        self._send_buffer = send_buffer
        if not _HEADERS:
            _HEADERS.extend(self.raw_headers)
        self.raw_headers = _HEADERS  # shared; never handed out for in-place mutation
        del self._send_lock  # only the stock __call__ uses it; 10,000 streams x 2 deques
        self._fanout, self._conn, self._first = fanout, conn, first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn, fanout = self._conn, self._fanout
        if scope.get("method", "GET").upper() == "HEAD":
            fanout.release(conn)
            self.raw_headers = list(_HEADERS)
            await super().__call__(scope, receive, send)
            return
        transport = connection_transport(scope)
        if transport is not None:
            limit_send_buffers(transport, self._send_buffer)
        listener = asyncio.get_running_loop().create_task(_until_disconnect(receive))
        listener.add_done_callback(lambda _t: conn.close("client gone"))
        try:
            # A copy: middleware (CORS) appends to the message's header list in place.
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": list(self.raw_headers)})
            # The first frames may be a large put: keep no reference for the stream's life.
            first, self._first = self._first, b""
            await send({"type": "http.response.body", "more_body": True, "body": b"retry: %d\n"
                        % RETRY_MS + (first or b"\n")})  # b"": it holds the current state
            del first
            fanout.sent(conn, None)
            # From here on the middleware has nothing to do with this body: idle, the fan-out
            # writes events straight to the socket; a batch goes the same way unless the
            # writer declines (socket full: then send() waits for it to drain).
            direct = conn.direct = body_writer(scope)
            while True:
                # All that queued up while the last send waited, in one send.
                batch = conn.take()
                if batch is None:
                    if conn.closed:
                        break
                    await conn.wait()  # a bare future: no coroutine objects per wait
                    continue
                body = batch[0] or PING
                if direct is None or not direct(body):
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                if batch[1]:
                    fanout.sent_batch(conn, batch[1])
                batch = body = None  # do not hold the last payload while idle
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            conn.direct = None
            listener.cancel()
            fanout.release(conn)


def limit_send_buffers(transport: asyncio.WriteTransport, kernel_bytes: int) -> None:
    """Make this stream's connection queue (bounded, coalescing) the only place its events wait.

    - The event loop's write buffer: a high-water mark of 0, so the transport pauses at the
      first write the kernel cannot take whole, and uvicorn parks our next send until it
      drains. Left at the default (64 KiB), a reader that stops reading would collect up to
      64 KiB of small events there, each write a live uvloop write request: in bench/soak.py
      thousands of them were young at every garbage-collector pass (passes of 2-6 ms) and the
      server's RSS was 157 MB, not 92.
    - The kernel send buffer: capped at ``kernel_bytes`` (0: left to the OS, whose autotuning
      grows it to 4 MB), so a stalled socket stops taking bytes after ~2x that, not ~4 MB.

    The transport comes from ``proxy.api.transport.connection_transport``."""
    # Closed meanwhile (uvloop: RuntimeError, or a pseudo-socket at fd -1): nothing to tune.
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket") if kernel_bytes else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, kernel_bytes)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


class _StreamsCollector:
    """Stream metrics not kept in the API's hot counters: propagation and refusals."""

    def __init__(self, fanout: FanOut):
        self.fanout = fanout

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        prop = HistogramMetricFamily("flagedge_sse_propagation_seconds",
                                     "Source write until an SSE event was sent", labels=["stream"])
        p = self.fanout.propagation
        for stream, counts in sorted(p.counts.items()):
            running, buckets = 0, []
            for bound, n in zip((*PROPAGATION_BUCKETS, float("inf")), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            prop.add_metric([stream], buckets, p.sums[stream])
        yield prop
        refused = CounterMetricFamily("flagedge_sse_refused",
                                      "SSE connections refused by a cap", labels=["cap"])
        for cap, n in sorted(self.fanout.rejected.items()):
            refused.add_metric([cap], n)
        yield refused
