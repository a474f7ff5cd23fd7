"""The access log, cheap enough to leave on (issue 21).

uvicorn logs each response through ``logging`` (its ``uvicorn.access`` logger). With its
``AccessFormatter`` and a ``StreamHandler``, every line was formatted by the generic machinery
(a ``strftime`` per line) and written and flushed on the request path: with the log on, bulk
OFREP ran at about a third of its speed with it off (``bench/access_log.py``).

:class:`AccessLogHandler` takes the same records and writes the same line:

    2026-12-06 17:50:27,123 INFO access [PID] 1.2.3.4:5 "GET /path HTTP/1.1" 200

- formatted by hand from the record's arguments; the date and time text is made once a second;
- the query string cut (keys, stream tokens and contexts ride there; never logged);
- buffered and written by a background thread every :data:`FLUSH_S`, or at once when
  :data:`BUFFER_BYTES` are waiting or a response is a 5xx (errors are never held back), and
  at exit (``logging.shutdown`` flushes every handler). A process killed with SIGKILL can
  lose at most the last :data:`FLUSH_S` of lines;
- without a ``LogRecord``: building one per response cost more than the rest together (a
  ``getpid`` system call, the caller's frame, thread and process names; measured with py-spy
  under wrk). The handler makes ``uvicorn.access`` an :class:`AccessLogger`, whose ``info``
  hands uvicorn's arguments straight to it. Other handlers added to that logger still get
  ordinary records.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO, Any

FLUSH_S = 0.2
BUFFER_BYTES = 64 * 1024
LOGGER = "uvicorn.access"


class AccessLogHandler(logging.Handler):
    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        access = logging.getLogger(LOGGER)
        if not isinstance(access, AccessLogger):
            # dictConfig builds handlers before it configures loggers, and uvicorn looks its
            # logger up by name: the same object, given the fast ``info``.
            access.__class__ = AccessLogger
        self.stream = stream if stream is not None else sys.stdout
        self._lines: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._closed = False
        threading.Thread(target=self._flusher, name="access-log", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called under self.lock
        args: Any = record.args
        if isinstance(args, tuple) and len(args) == 5:
            self._add(self.line(record.created, args), args[4])
        else:  # not uvicorn's access record
            self._add(f"{self._time(record.created)} INFO access [{self._pid}] "
                      f"{record.getMessage()}\n", 0)

    def response(self, args: tuple[Any, ...]) -> None:
        """uvicorn's arguments for one response, without a LogRecord (:class:`AccessLogger`)."""
        with self.lock:  # type: ignore[union-attr]  # _time's cached text, too
            self._add(self.line(time.time(), args), args[4])

    def line(self, created: float, args: tuple[Any, ...]) -> str:
        """uvicorn's arguments: client address, method, path with query, HTTP version,
        status."""
        client, method, path, version, status = args
        return (f'{self._time(created)} INFO access [{self._pid}] {client} '
                f'"{method} {str(path).partition("?")[0]} HTTP/{version}" {status}\n')

    def _add(self, line: str, status: Any) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= BUFFER_BYTES or (isinstance(status, int) and status >= 500):
            self._write()

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    def _write(self) -> None:
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # the stream went away (a closed pipe at exit)
            pass

    def _flusher(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_S)
            self.flush()


class AccessLogger(logging.Logger):
    """``uvicorn.access``: uvicorn calls ``info(fmt, client, method, path, version, status)``
    per response. With only access-log handlers attached, that skips the LogRecord."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        handlers = self.handlers
        if (not self.disabled and handlers and len(args) == 5 and not kwargs
                and all(h.__class__ is AccessLogHandler for h in handlers)):
            if self.isEnabledFor(logging.INFO):
                for handler in handlers:
                    handler.response(args)  # type: ignore[attr-defined]
            return
        super().info(msg, *args, **kwargs)
