"""The access log handler: uvicorn's records written as one line each, query strings cut,
buffered off the request path, errors and exit never held back."""

from __future__ import annotations

import io
import logging
import os
import re

from proxy.server import access_log
from proxy.server.access_log import AccessLogHandler
from tests.redis_server import wait_until

LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO access \[(\d+)\] (.*)$')


def record(path: str, status: int) -> logging.LogRecord:
    """What uvicorn's httptools protocol logs for a response."""
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                             '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", path, "1.1", status),
                             None)


def logger_with(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"test.access.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def test_a_line_names_the_worker_and_loses_the_query_string():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.handle(record("/ofrep/v1/events?token=SECRET&key=K", 200))
    assert out.getvalue() == ""  # buffered: nothing written on the request path
    handler.flush()
    line = out.getvalue()
    assert "SECRET" not in line and "key=K" not in line
    pid, rest = LINE.match(line.rstrip("\n")).groups()
    assert int(pid) == os.getpid()
    assert rest == '1.2.3.4:5 "GET /ofrep/v1/events HTTP/1.1" 200'
    handler.close()


def test_a_server_error_is_written_at_once():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    handler.handle(record("/a", 200))
    handler.handle(record("/b", 503))
    assert [ln.split('"')[1] for ln in out.getvalue().splitlines()] == ["GET /a HTTP/1.1",
                                                                       "GET /b HTTP/1.1"]
    handler.close()


def test_a_full_buffer_is_written_and_close_writes_the_rest(monkeypatch):
    monkeypatch.setattr(access_log, "BUFFER_BYTES", 200)
    out = io.StringIO()
    handler = AccessLogHandler(out)
    for i in range(3):
        handler.handle(record(f"/{i}", 200))
    assert out.getvalue().count("\n") >= 2  # ~80 bytes a line: the 200-byte buffer filled
    handler.handle(record("/last", 204))
    handler.close()
    assert out.getvalue().rstrip().endswith('"GET /last HTTP/1.1" 204')


def test_the_background_thread_writes_what_waits():
    out = io.StringIO()
    handler = AccessLogHandler(out)
    logger_with(handler).info('%s - "%s %s HTTP/%s" %d', "9.9.9.9:1", "POST", "/x?y", "1.1", 200)
    # The flusher runs every FLUSH_S: wait for the line with a deadline.
    wait_until(lambda: "POST /x" in out.getvalue(), timeout=access_log.FLUSH_S * 20,
               interval=0.01, what="the flusher thread to write the line")
    assert '"POST /x HTTP/1.1" 200' in out.getvalue()
    handler.close()


def test_uvicorns_logger_hands_its_arguments_straight_to_the_handler():
    """uvicorn calls ``logging.getLogger("uvicorn.access").info(fmt, *5 args)``: with only
    access-log handlers that builds no LogRecord; with another handler it logs as before."""
    out = io.StringIO()
    handler = AccessLogHandler(out)
    access = logging.getLogger("uvicorn.access")
    assert isinstance(access, access_log.AccessLogger)
    saved = access.handlers[:], access.level, access.propagate
    access.handlers, access.propagate = [handler], False
    access.setLevel(logging.INFO)
    seen: list[logging.LogRecord] = []

    class Records(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    try:
        access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/a?k=1", "1.1", 200)
        assert seen == []
        access.addHandler(Records())
        access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/b", "1.1", 201)
        assert [r.args[2] for r in seen] == ["/b"]
    finally:
        access.handlers, level, access.propagate = saved[0], saved[1], saved[2]
        access.setLevel(level)
    handler.close()
    assert [ln.split('"')[1] for ln in out.getvalue().splitlines()] == ["GET /a HTTP/1.1",
                                                                       "GET /b HTTP/1.1"]
