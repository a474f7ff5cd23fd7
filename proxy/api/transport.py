"""An endpoint's own connection, read from the request scope.

The HTTP protocol (``proxy.server.http_protocol``) puts the request's uvicorn cycle in
``scope["extensions"][CYCLE_EXTENSION]``; the readers of that extension live here, on the
side that consumes it, so the API never imports the server:

- :func:`connection_transport`: the event loop's transport of the connection (the SSE
  streams cap their send buffers);
- :func:`body_writer`: a started streamed body written without a trip through the
  middleware stack (the fan-out writes SSE events to idle streams directly).
- :func:`send_ok`: a whole 200 response written as uvicorn's ``send`` would write it, without
  the two ASGI messages (the bulk OFREP answer, from the fast path only).

Under any other server the extension is absent: the readers return None or False.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

# scope["extensions"] key: a weak reference to uvicorn's RequestResponseCycle (read it with
# the functions below)
CYCLE_EXTENSION = "flagedge.cycle"
BodyWriter = Callable[[bytes], bool]


class TransportWrapper:
    """Base of a transport that wraps the event loop's own (the protocol's gathering
    transport): :func:`connection_transport` hands out the one underneath."""

    __slots__ = ()

    def loop_transport(self) -> asyncio.Transport:
        raise NotImplementedError


def _cycle(scope: dict[str, Any]) -> RequestResponseCycle | None:
    ref: weakref.ref[RequestResponseCycle] | None = scope.get("extensions", {}).get(
        CYCLE_EXTENSION)
    return ref() if ref is not None else None


def connection_transport(scope: dict[str, Any]) -> asyncio.Transport | None:
    """The event loop's transport of the connection serving ``scope`` (None when the protocol
    did not set the extension)."""
    cycle = _cycle(scope)
    if cycle is None:
        return None
    transport = cycle.transport
    if isinstance(transport, TransportWrapper):
        return transport.loop_transport()  # the loop's own, under the gathering wrapper
    return transport


def body_writer(scope: dict[str, Any]) -> BodyWriter | None:
    """A function that writes one more chunk of this request's streamed (chunked) response body
    straight to the transport, as ``send({"type": "http.response.body", "more_body": True})``
    would, without the coroutines of every middleware in between. It returns False, writing
    nothing, whenever ``send`` would have to wait or would not write: the head not sent yet,
    the body complete, not chunked, the client gone, or the transport paused by flow control.
    The caller then falls back to ``send``. For bodies the middleware has nothing to do with
    (SSE events after the stream's first ``send``). None when the protocol did not set the
    extension."""
    cycle = _cycle(scope)
    if cycle is None:
        return None
    flow, transport = cycle.flow, cycle.transport
    # Asked of the loop's own transport: through the gathering wrapper's __getattr__ this
    # one call was a tenth of the fan-out's time at 10,000 streams.
    own = transport.loop_transport() if isinstance(transport, TransportWrapper) else transport
    is_closing = own.is_closing

    def write(body: bytes) -> bool:
        if (cycle.disconnected or flow.write_paused or not cycle.response_started
                or cycle.response_complete or not cycle.chunked_encoding or not body
                or is_closing()):
            return False
        try:
            transport.write(_chunk(body))
        except RuntimeError:  # the transport closed under us: send() will find out
            return False
        return True

    return write


class _LastChunk:
    """``body`` as one chunk of a chunked HTTP body, remembering the last one framed: a change
    sends the same bytes object to every idle stream, so it is framed once, not 10,000
    times. Holding the last body (one payload at most) keeps its id from being reused by
    another object."""

    __slots__ = ("body", "chunk")

    def __init__(self) -> None:
        self.body = self.chunk = b""

    def __call__(self, body: bytes) -> bytes:
        if body is not self.body:
            self.body, self.chunk = body, b"%x\r\n%b\r\n" % (len(body), body)
        return self.chunk


_chunk = _LastChunk()


def send_ok(scope: dict[str, Any], headers: bytes, body: bytes) -> bool:
    """Write a complete ``200 OK`` response, ``headers`` (lines ending in CRLF; names in lower
    case, values valid) and ``body``, as uvicorn's ``send`` writes a start message and one
    final body message: its default headers (date, server) first, ``connection: close`` when
    the connection will not be kept, the response marked complete, the protocol told.

    Skipping the messages saves the per-header checks, lowercasing and joins that ``send``
    does for every response, and two coroutine steps. Only for callers with no middleware
    wrapping ``send`` between them and the server (the OFREP fast path). False, writing
    nothing, whenever ``send`` would do more than write: a response already started, the
    client gone, writes paused by flow control (``send`` waits), uvicorn's own access log
    on, a HEAD request; the caller then sends as usual."""
    cycle = _cycle(scope)
    if (cycle is None or cycle.response_started or cycle.disconnected
            or cycle.flow.write_paused or cycle.access_log or scope["method"] == "HEAD"):
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    close = b"" if cycle.keep_alive else b"connection: close\r\n"
    transport = cycle.transport  # the protocol's gathering transport joins the two writes
    transport.write(b"HTTP/1.1 200 OK\r\n" + _defaults(cycle.default_headers) + headers
                    + close + b"\r\n")
    transport.write(body)
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True


class _DefaultHeaders:
    """uvicorn's default headers formatted as ``send`` formats them, once per list: the
    server puts a new list (a new date) in place every second. Holding the last list keeps
    its id from being reused."""

    __slots__ = ("formatted", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.formatted = b""

    def __call__(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self.headers:
            self.headers = headers
            self.formatted = b"".join(b"%s: %s\r\n" % (name.lower(), value)
                                      for name, value in headers)
        return self.formatted


_defaults = _DefaultHeaders()
