"""The access log: our protocol records each response's head (time, client, method, path,
version, status) as a line and a background thread writes the lines, query strings never in
them, off the request path, errors and exit never held back."""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Any

from proxy.server import access_log
from proxy.server.access_log import AccessLogHandler
from tests.redis_server import wait_until

LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO access \[(\d+)\] (.*)$')


def scope(path: str, method: str = "GET", client: Any = ("1.2.3.4", 5)) -> dict[str, Any]:
    """The parts of an ASGI scope the log reads (uvicorn's path is decoded and has no query)."""
    return {"client": client, "method": method, "path": path, "http_version": "1.1",
            "query_string": b"token=SECRET&key=K"}


def lines(out: io.StringIO) -> list[str]:
    return [LINE.match(ln).group(2) for ln in out.getvalue().splitlines()]


def test_a_line_names_the_worker_and_never_the_query_string():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.response(scope("/ofrep/v1/events"), b"200")
    assert out.getvalue() == ""  # nothing written on the request path
    handler.flush()
    line = out.getvalue()
    assert "SECRET" not in line and "key=K" not in line
    pid, rest = LINE.match(line.rstrip("\n")).groups()
    assert int(pid) == os.getpid()
    assert rest == '1.2.3.4:5 "GET /ofrep/v1/events HTTP/1.1" 200'
    handler.close()


def test_a_path_cannot_forge_a_line():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.response(scope('/a" 200\n2026-01-01 00:00:00,000 INFO access [1] x "GET /b'), b"404")
    handler.response(scope("/é"), b"404")
    handler.response(scope("/x", client=None), b"200")
    handler.close()
    assert lines(out) == ['1.2.3.4:5 "GET /a%22%20200%0A2026-01-01%2000:00:00,000%20INFO%20access'
                          '%20%5B1%5D%20x%20%22GET%20/b HTTP/1.1" 404',
                          '1.2.3.4:5 "GET /%C3%A9 HTTP/1.1" 404', '- "GET /x HTTP/1.1" 200']


def test_lines_formatted_once_per_connection_and_route_keep_each_requests_own_parts():
    """The part of a line after its time is kept per (client, method, path, version,
    status) and the time per millisecond: neither may leak into another request's line."""
    handler = AccessLogHandler(io.StringIO())
    at = 1_700_000_000.0
    a, b = ("1.2.3.4", 5), ("1.2.3.4", 6)
    got = [handler.line(at + dt, client, method, path, "1.1", status)
           for dt, client, method, path, status in (
               (0.0001, a, "POST", "/x", b"200"), (0.0002, a, "POST", "/x", b"200"),
               (0.0011, b, "POST", "/x", b"200"), (0.0012, a, "POST", "/x", b"304"),
               (1.0005, a, "GET", "/y", b"200"), (1.0006, a, "POST", "/x", b"200"))]
    stamp = [g[:23] for g in got]
    assert [s[-3:] for s in stamp] == ["000", "000", "001", "001", "000", "000"]
    assert stamp[0][:19] != stamp[4][:19]  # the next second
    assert [g.split(f"[{os.getpid()}] ", 1)[1] for g in got] == [
        '1.2.3.4:5 "POST /x HTTP/1.1" 200\n', '1.2.3.4:5 "POST /x HTTP/1.1" 200\n',
        '1.2.3.4:6 "POST /x HTTP/1.1" 200\n', '1.2.3.4:5 "POST /x HTTP/1.1" 304\n',
        '1.2.3.4:5 "GET /y HTTP/1.1" 200\n', '1.2.3.4:5 "POST /x HTTP/1.1" 200\n']
    long = "/" + "p" * access_log.MAX_KEPT_PATH
    assert handler.line(at, a, "GET", long, "1.1", b"404").endswith(f'"GET {long} HTTP/1.1" 404\n')
    assert all(len(key[2]) <= access_log.MAX_KEPT_PATH for key in handler._rests)
    unhashable = handler.line(at, ["5.6.7.8", 9], "GET", "/z", "1.1", b"200")
    assert unhashable.endswith('5.6.7.8:9 "GET /z HTTP/1.1" 200\n')  # formatted, not kept
    handler.close()


def test_a_server_error_wakes_the_writer_at_once():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.response(scope("/a"), b"200")
    handler.response(scope("/b", "POST"), b"503")
    # Written by the flusher thread, woken by the 503 (not FLUSH_S later): both lines, in order.
    wait_until(lambda: out.getvalue().count("\n") == 2, timeout=access_log.FLUSH_S * 20,
               interval=0.005, what="the error to be written")
    assert lines(out) == ['1.2.3.4:5 "GET /a HTTP/1.1" 200', '1.2.3.4:5 "POST /b HTTP/1.1" 503']
    handler.close()


def test_the_background_thread_writes_what_waits_and_close_writes_the_rest():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.response(scope("/x", "POST"), b"200")
    wait_until(lambda: "POST /x" in out.getvalue(), timeout=access_log.FLUSH_S * 20,
               interval=0.01, what="the flusher thread to write the line")
    handler.response(scope("/last"), b"204")
    handler.close()
    assert lines(out)[-1] == '1.2.3.4:5 "GET /last HTTP/1.1" 204'


def test_the_handler_is_the_sink_while_it_lives():
    handler = AccessLogHandler(io.StringIO())
    assert access_log.SINK is handler
    handler.close()
    assert access_log.SINK is None


def test_other_records_on_its_logger_are_lines_too():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    log = logging.getLogger(f"test.access.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.info("hello %s", "there")
    handler.close()
    assert lines(out) == ["hello there"]


def test_a_line_made_while_the_flusher_writes_is_not_lost():
    """The flusher may run while the serving thread is making a line (between its look at
    the pending lines and its append): that line is written by the next flush."""

    class FlushedMidLine(AccessLogHandler):
        def line(self, *parts: Any) -> str:
            text = super().line(*parts)
            self.flush()  # the flusher's turn, in the middle of response()
            return text

    out = io.StringIO()
    handler = FlushedMidLine(out)
    handler.response(scope("/x"), b"200")
    handler.close()
    assert lines(out) == ['1.2.3.4:5 "GET /x HTTP/1.1" 200']
