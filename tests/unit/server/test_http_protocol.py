"""One write per response (proxy.server.http_protocol), driven through uvicorn's real protocol code,
and the scope extension it sets, read through proxy.api.transport.

The transport here records writes instead of sending them: the count of ``write`` calls is what
is under test. Real sockets and streams go through it in every integration test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import weakref
from collections.abc import Iterator
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.api.transport import body_writer, connection_transport, send_ok
from proxy.server import http_protocol
from proxy.server.access_log import AccessLogHandler
from proxy.server.http_protocol import GatheringHttpToolsProtocol
from tests.waiting import until


class FakeSocket:
    """Stands in for the connection's socket (uvicorn reads the addresses from it)."""

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)


SOCKET = FakeSocket()


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000),
                "socket": SOCKET}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


async def plain(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def connect(app: Any, protocol: type = GatheringHttpToolsProtocol
            ) -> tuple[HttpToolsProtocol, RecordingTransport]:
    config = Config(app=app, http=protocol, loop="none", access_log=False, log_level="warning")
    config.load()
    proto = config.http_protocol_class(config=config, server_state=ServerState(), app_state={},
                                       _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    proto.connection_made(transport)
    return proto, transport


async def ticks(n: int = 3) -> None:
    """Let callbacks scheduled with call_soon run (each sleep(0) is one loop iteration)."""
    for _ in range(n):
        await asyncio.sleep(0)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_response_goes_out_in_one_write_head_and_body_together():
    proto, transport = connect(plain)
    proto.data_received(GET)
    await until(lambda: proto.cycle is not None and proto.cycle.response_complete)
    await ticks()  # any write still gathered would have left by now
    (only,) = transport.writes
    assert only.startswith(b"HTTP/1.1 200 OK\r\n") and only.endswith(b"\r\n\r\n{}")
    # Keep-alive: the next response on the connection is again one write.
    proto.data_received(GET)
    await until(lambda: len(transport.writes) == 2)
    await ticks()
    assert len(transport.writes) == 2


async def test_uvicorn_alone_writes_head_and_body_separately():
    """The baseline this module improves on (if uvicorn ever gathers itself, drop ours)."""
    proto, transport = connect(plain, HttpToolsProtocol)
    proto.data_received(GET)
    await until(lambda: len(transport.writes) == 2)
    assert transport.writes[1] == b"{}"


async def test_a_streamed_response_is_not_held_back_until_it_ends():
    release = asyncio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    proto, transport = connect(stream)
    proto.data_received(GET)
    # Head and first event leave at the end of the loop tick, while the stream is still open.
    await until(lambda: transport.writes)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"data: 1\n\n\r\n")  # chunked framing
    release.set()
    await until(lambda: b"".join(transport.writes).endswith(b"0\r\n\r\n"))
    assert transport.writes[1].endswith(b"data: 2\n\n\r\n")  # later events: straight out


async def test_close_sends_what_was_gathered_first():
    proto, transport = connect(plain)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await until(lambda: "close" in transport.events)
    assert transport.events[0] == "write" and transport.writes[0].endswith(b"{}")


async def test_a_response_is_held_until_the_tick_ends_and_counts_in_the_write_buffer_size():
    proto, transport = connect(plain)
    proto.transport.write(b"straight")  # no response under way: not held
    assert transport.writes == [b"straight"]
    proto.transport.hold_next({})
    proto.transport.write(b"head")
    proto.transport.write(b"body")
    proto.transport.write(b"more")
    assert proto.transport.get_write_buffer_size() == 12 and transport.writes == [b"straight"]
    await until(lambda: len(transport.writes) == 2)  # the tick ended
    assert transport.writes[1] == b"headbodymore"
    assert proto.transport.get_write_buffer_size() == 0
    proto.transport.write(b"later")  # a streamed body's next chunk: straight out
    assert transport.writes[2] == b"later"


async def test_a_large_response_is_not_copied_while_it_is_held():
    proto, transport = connect(plain)
    proto.transport.hold_next({})
    proto.transport.write(b"head")
    body = b"x" * http_protocol.MAX_HELD
    proto.transport.write(body)
    assert transport.writes == [b"head" + body]  # at once, head first
    proto.transport.write(b"tail")
    assert transport.writes[1] == b"tail"


async def test_the_responses_of_a_batch_leave_together_when_its_last_one_is_answered():
    """Requests that arrived together are answered back to back, when the last of them has
    its response: on loopback, each response written while the client sleeps pays for
    waking it (under wrk, new users: ~20 -> ~8 us of system CPU a request). Not on
    the loop's next turn: its due timers (the fan-out's slices) would come first."""
    seen: list[int] = []
    connections: list[RecordingTransport] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await plain(scope, receive, send)
        seen.append(sum(len(t.writes) for t in connections))  # written so far, all connections

    protos = [connect(app) for _ in range(3)]
    connections.extend(t for _, t in protos)
    for proto, _ in protos:
        proto.data_received(GET)
    await until(lambda: len(seen) == 3)
    assert seen == [0, 0, 3]  # one response each, at once with the last one


async def test_the_endpoint_finds_its_connections_transport_in_the_scope():
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(connection_transport(scope))
        await plain(scope, receive, send)

    proto, transport = connect(app)
    proto.data_received(GET)
    await until(lambda: transport.writes)
    assert seen == [transport]  # the loop's own transport, not the gathering wrapper
    assert connection_transport({"type": "http"}) is None  # another server: nothing
    assert body_writer({"type": "http", "extensions": {}}) is None


def streaming_app(steps: asyncio.Queue[Any], writers: list[Any]) -> Any:
    """A streamed response that hands its body writer out, then sends what the test queues
    (None ends the body)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        write = body_writer(scope)
        assert write is not None and write(b"data: early\n\n") is False  # no head sent yet
        writers.append(write)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        while (body := await steps.get()) is not None:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_the_body_writer_writes_exactly_what_send_would():
    steps: asyncio.Queue[Any] = asyncio.Queue()
    writers: list[Any] = []
    proto, transport = connect(streaming_app(steps, writers))
    proto.data_received(GET)
    await until(lambda: writers)
    (write,) = writers
    await steps.put(b"data: 1\n\n")  # the normal way: head, then the first event
    await until(lambda: b"".join(transport.writes).endswith(b"data: 1\n\n\r\n"))
    assert write(b"data: 2\n\n") is True
    await steps.put(b"data: 3\n\n")
    await until(lambda: transport.writes[-1].endswith(b"data: 3\n\n\r\n"))
    # The same chunked framing as send(): the direct write is indistinguishable.
    assert transport.writes[-3:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n",
                                     b"9\r\ndata: 3\n\n\r\n"]
    assert write(b"") is False  # an empty chunk would end the body: never written
    proto.pause_writing()  # flow control: send() would wait, so the writer declines
    assert write(b"data: 4\n\n") is False
    proto.resume_writing()
    assert write(b"data: 4\n\n") is True
    await steps.put(None)  # the body ends: nothing may follow it
    await until(lambda: transport.writes[-1].endswith(b"0\r\n\r\n"))
    n = len(transport.writes)
    assert write(b"data: 5\n\n") is False and len(transport.writes) == n


async def a_started_stream() -> tuple[Any, RecordingTransport, list[Any], asyncio.Queue[Any]]:
    """A streamed response whose first event went out: the protocol, its transport, the
    body writer (in a list) and the app's queue of events (None ends the response)."""
    steps: asyncio.Queue[Any] = asyncio.Queue()
    writers: list[Any] = []
    proto, transport = connect(streaming_app(steps, writers))
    proto.data_received(GET)
    await steps.put(b"data: 1\n\n")
    await until(lambda: b"".join(transport.writes).endswith(b"data: 1\n\n\r\n"))
    return proto, transport, writers, steps


async def test_the_body_writer_declines_once_the_client_is_gone():
    proto, transport, writers, steps = await a_started_stream()
    n = len(transport.writes)
    assert writers[0](b"data: 2\n\n") is True and len(transport.writes) == n + 1
    proto.connection_lost(None)
    assert writers[0](b"data: 3\n\n") is False and len(transport.writes) == n + 1
    await steps.put(None)


async def test_the_body_writer_frames_each_body_it_is_given():
    """Each body is framed once and reused while the same bytes go to other streams (a change
    goes to thousands): a body of the same length, or the earlier one again, is still framed
    as itself."""
    steps: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]
    writers: list[Any] = []
    streams = [connect(streaming_app(q, writers)) for q in steps]
    for (proto, transport), q in zip(streams, steps, strict=True):
        proto.data_received(GET)
        await q.put(b"data: 0\n\n")
        await until(lambda t=transport: b"".join(t.writes).endswith(b"data: 0\n\n\r\n"))
    first, second = b"data: 1\n\n", b"data: 2\n\n"
    for body in (first, first, second, first):
        for write in writers:
            assert write(body) is True
    for _proto, transport in streams:
        assert transport.writes[-4:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 1\n\n\r\n",
                                         b"9\r\ndata: 2\n\n\r\n", b"9\r\ndata: 1\n\n\r\n"]
    for q in steps:
        await q.put(None)


async def test_the_body_writer_declines_once_the_connection_is_closing():
    """Closed by the server (shutdown, a sweep), not yet lost: asked of the loop's transport
    under the gathering wrapper."""
    _proto, transport, writers, steps = await a_started_stream()
    transport.close()
    n = len(transport.writes)
    assert writers[0](b"data: 2\n\n") is False and len(transport.writes) == n
    await steps.put(None)


async def test_the_body_writer_declines_a_body_that_is_not_chunked():
    writers: list[Any] = []

    async def sized(scope: Any, receive: Any, send: Any) -> None:
        writers.append(body_writer(scope))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        assert writers[0](b"cd") is False  # raw bytes would break the declared length
        await send({"type": "http.response.body", "body": b"cd"})

    proto, transport = connect(sized)
    proto.data_received(GET)
    await until(lambda: proto.cycle is not None and proto.cycle.response_complete)
    assert b"".join(transport.writes).endswith(b"\r\n\r\nabcd")


async def test_a_finished_request_is_freed_without_the_garbage_collector():
    """The scope names its cycle only weakly: the cycle holds the scope, so a strong reference
    would leave every request as a reference cycle for the collector (bench/ofrep_http.py:
    0.80x of the echo instead of 0.92x)."""
    proto, transport = connect(plain)
    gc.disable()
    try:
        proto.data_received(GET)
        await until(lambda: proto.cycle is not None and proto.cycle.response_complete)
        first = weakref.ref(proto.cycle)
        assert connection_transport(proto.cycle.scope) is transport  # the extension is there
        proto.data_received(GET)  # the connection moves on to its next request
        await until(lambda: proto.cycle is not first() and proto.cycle.response_complete)
        await ticks()
        assert first() is None  # freed by reference counting alone
    finally:
        gc.enable()


@contextlib.contextmanager
def access_lines() -> Iterator[io.StringIO]:
    """The access log, written to a string while the block runs (create it after
    ``connect``: uvicorn's Config resets logging)."""
    out = io.StringIO()
    handler = AccessLogHandler(out)
    try:
        yield out
    finally:
        handler.close()


async def test_each_response_head_is_recorded_to_the_access_log_with_its_status():
    async def missing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    proto, transport = connect(missing)
    with access_lines() as out:
        proto.data_received(b"GET /nope?key=SECRET HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: transport.writes)
    assert out.getvalue().endswith('127.0.0.1:50000 "GET /nope HTTP/1.1" 404\n')


async def test_an_interim_100_continue_goes_out_at_once_and_is_not_the_logged_head():
    proto, transport = connect(plain)
    with access_lines() as out:
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                            b"Content-Length: 2\r\n\r\n")
        await until(lambda: transport.writes)  # the app awaits the body: uvicorn says continue
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        proto.data_received(b"{}")
        await until(lambda: len(transport.writes) == 2)
    assert transport.writes[1].startswith(b"HTTP/1.1 200 OK")
    assert out.getvalue().endswith('"POST /x HTTP/1.1" 200\n') and out.getvalue().count("\n") == 1


async def test_pipelined_requests_are_each_recorded_to_the_access_log():
    """The second request's head arrives while the first is answered; each response is
    logged with its own request (the head to hold is chosen when a request's task starts)."""
    proto, transport = connect(plain)
    with access_lines() as out:
        proto.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: len(transport.writes) == 2)
        await ticks()
    lines = out.getvalue().splitlines()
    assert [line.split('"')[1] for line in lines] == ["GET /first HTTP/1.1",
                                                      "GET /second HTTP/1.1"], lines


HEADERS = b"content-length: 2\r\ncontent-type: application/json\r\netag: \"e\"\r\n"


def answering(direct: bool, sent: list[bool] | None = None) -> Any:
    """An app answering ``{}`` with HEADERS: through ``send_ok`` or, as the baseline,
    through the two ASGI messages. ``sent`` collects what ``send_ok`` returned."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if direct:
            done = send_ok(scope, HEADERS, b"{}")
            if sent is not None:
                sent.append(done)
            if done:
                return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"2"), (b"content-type", b"application/json"),
            (b"etag", b'"e"')]})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


async def response_of(app: Any, request: bytes) -> tuple[list[bytes], RecordingTransport]:
    proto, transport = connect(app)
    proto.server_state.default_headers = [(b"Date", b"Mon, 07 Dec 2026 10:00:00 GMT"),
                                          (b"server", b"flagedge")]
    proto.data_received(request)
    await until(lambda: proto.cycle is not None and proto.cycle.response_complete)
    await ticks()
    return transport.writes, transport


async def test_send_ok_writes_exactly_what_send_would():
    for request in (GET, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"GET / HTTP/1.0\r\n\r\n"):
        sent: list[bool] = []
        direct, direct_transport = await response_of(answering(True, sent), request)
        baseline, baseline_transport = await response_of(answering(False), request)
        assert sent == [True]
        assert direct == baseline and len(direct) == 1, (direct, baseline)
        assert direct_transport.closing == baseline_transport.closing
    assert b"\r\nconnection: close\r\n" in direct[0] and direct_transport.closing
    assert direct[0].startswith(b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\n")


async def test_send_ok_leaves_the_next_request_on_the_connection_working():
    proto, transport = connect(answering(True))
    proto.data_received(GET + GET)  # pipelined: the second waits for the first to complete
    await until(lambda: len(transport.writes) == 2)
    assert transport.writes[0] == transport.writes[1] and not transport.closing


async def test_send_ok_declines_when_send_would_wait_or_has_begun():
    sent: list[bool] = []
    proto, transport = connect(answering(True, sent))
    proto.pause_writing()  # flow control: send() would wait for the buffer to drain
    proto.data_received(GET)
    await until(lambda: sent)
    assert sent == [False] and proto.cycle is not None and not proto.cycle.response_complete
    proto.resume_writing()
    await until(lambda: proto.cycle.response_complete)  # answered through send()
    assert transport.writes[-1].endswith(b"\r\n\r\n{}")

    async def begun(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        sent.append(send_ok(scope, HEADERS, b"{}"))
        await send({"type": "http.response.body", "body": b"{}"})

    proto, transport = connect(begun)
    proto.data_received(GET)
    await until(lambda: len(sent) == 2)
    assert sent[1] is False
    for method in (b"HEAD",):
        sent.clear()
        proto, transport = connect(answering(True, sent))
        proto.data_received(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: sent)
        assert sent == [False]


def test_send_ok_declines_without_the_protocols_extension():
    assert send_ok({"method": "POST", "extensions": {}}, HEADERS, b"{}") is False
