"""The access log, cheap enough to leave on (issue 21).

uvicorn logs each response through ``logging`` (its ``uvicorn.access`` logger): a
``LogRecord``, a formatter with a ``strftime`` and a write per line, on the request path.
With it on, bulk OFREP ran at about a third of its speed with it off. Even reduced to a
hand-written line per response, the call chain (uvicorn's argument building, the logger, the
line) cost ~6 µs of a ~55 µs request (``bench/access_log.py``: 0.86x of the log off).

So uvicorn's access log stays off, and our protocol (:mod:`proxy.server.http_protocol`)
records each response when its head is written: :meth:`AccessLogHandler.response` makes its
line from parts already formatted (everything after the time is kept per connection and
route, the time per millisecond: ~0.5 us) and appends it to a list. A background thread
joins and writes the lines every :data:`FLUSH_S`, at once when a response is a 5xx (errors
are never held back) or :data:`MAX_PENDING` wait, and at exit (``logging.shutdown`` flushes
every handler). A process killed with SIGKILL loses at most the last :data:`FLUSH_S` of
lines. The line is the one uvicorn's format gave:

    2026-12-06 17:50:27,123 INFO access [PID] 1.2.3.4:5 "GET /path HTTP/1.1" 200

Formatted where the response is, not in the thread: when the thread formatted 0.2 s of lines
it had to hand the GIL back every 128 lines, and those hand-overs cost the serving thread
more than the formatting (``bench/access_log.py``, alternating runs: on/off 0.897, 0.921 ->
0.918, 0.901, 0.935, and the log-on p99 3.15, 3.15 -> 1.84, 2.22, 1.85 ms against ~1.6 ms
with it off; with new users: p99 4.6 -> 3.6 ms). Now the thread holds the GIL once per
write, for the join.

The path is the decoded path without its query string (keys, stream tokens and contexts ride
there; never logged); a path with spaces, quotes or control characters is percent-encoded so
that it cannot forge a line. A streamed response (SSE) is logged when its head is sent.

The handler is created by ``flagedge serve``'s logging configuration (in every worker) when
the access log is on; creating it makes it the process's sink (:data:`SINK`). Other records
logged to its logger are written as ordinary lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO, Any
from urllib.parse import quote

FLUSH_S = 0.2
MAX_PENDING = 4096  # lines waiting for the flusher before it is woken early
MAX_KEPT = 4096  # formatted line ends kept (one per connection and route, cleared when full)
MAX_KEPT_PATH = 256  # longer paths are formatted every time, never kept
LOGGER = "flagedge.access"
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"

SINK: AccessLogHandler | None = None  # the process's access log, None while it is off


class AccessLogHandler(logging.Handler):
    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        global SINK
        self.stream = stream if stream is not None else sys.stdout
        # Appended by the serving thread; the flusher takes what is there with a copy and a
        # delete of the same slice (each one step under the GIL, no lock): a line appended
        # meanwhile stays for the next write. (Swapping in a new list lost a line appended to
        # the old one by a serving thread that had read it before the swap.)
        self._pending: list[str] = []
        self._lines: list[str] = []  # other records' lines, formatted when logged
        # (client, method, path, version, status) -> the line after its time (``line``)
        self._rests: dict[tuple[Any, str, str, str, bytes], str] = {}
        self._second = -1
        self._stamp = ""
        self._ms = -1  # the millisecond ``_ms_stamp`` was formatted for
        self._ms_stamp = ""
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._closed = False
        threading.Thread(target=self._flusher, name="access-log", daemon=True).start()
        SINK = self

    # -- the request path: a line from kept parts, no lock, no write ----------------------
    def response(self, scope: dict[str, Any], status: bytes) -> None:
        """One response whose head is being written (``status``: its 3 digits). Called by
        the serving thread only (the kept parts are its own)."""
        pending = self._pending
        pending.append(self.line(time.time(), scope.get("client"), scope["method"],
                                 scope["path"], scope["http_version"], status))
        if status[0] == 53 or len(pending) >= MAX_PENDING:  # b"5": a server error
            self._wake.set()

    # -- logging.Handler -----------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:  # called under self.lock
        # (Any thread may log: its own stamp, not the serving thread's kept one.)
        second, fraction = divmod(int(record.created * 1000), 1000)
        self._lines.append(f"{_second(second)},{fraction:03d} INFO access [{self._pid}] "
                           f"{record.getMessage()}\n")

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        global SINK
        if SINK is self:
            SINK = None
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    # -- the lines -------------------------------------------------------------------------
    def line(self, created: float, client: Any, method: str, path: str, version: str,
             status: bytes) -> str:
        """``client``: (host, port) or None; ``status``: 3 bytes."""
        # Everything after the time is the same for every request of one kept-alive
        # connection to one route: formatted once (100,000 lines: ~1.0 -> ~0.46 us a line).
        key = (client, method, path, version, status)
        try:
            rest = self._rests.get(key)
        except TypeError:  # a client that is not a tuple (another server's scope): not kept
            return self._time(created) + self._rest(client, method, path, version, status)
        if rest is None:
            rest = self._rest(client, method, path, version, status)
            if len(path) <= MAX_KEPT_PATH:
                if len(self._rests) >= MAX_KEPT:
                    self._rests.clear()
                self._rests[key] = rest
        return self._time(created) + rest

    def _rest(self, client: Any, method: str, path: str, version: str, status: bytes) -> str:
        if not (path.isascii() and path.isprintable()) or " " in path or '"' in path:
            path = quote(path, safe=_SAFE_PATH)
        peer = f"{client[0]}:{client[1]}" if client else "-"
        return (f' INFO access [{self._pid}] {peer} '
                f'"{method} {path} HTTP/{version}" {status.decode("ascii", "replace")}\n')

    def _time(self, created: float) -> str:
        ms = int(created * 1000)
        if ms == self._ms:  # ~20 lines a millisecond at 20k requests/s
            return self._ms_stamp
        second, fraction = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._stamp = _second(second)
        self._ms, self._ms_stamp = ms, f"{self._stamp},{fraction:03d}"
        return self._ms_stamp

    # -- the flusher's side ----------------------------------------------------------------
    def _write(self) -> None:
        queued = self._pending
        n = len(queued)
        pending = queued[:n]
        del queued[:n]
        lines, self._lines = self._lines, []
        try:
            if lines:
                self.stream.write("".join(lines))
            if pending:
                self.stream.write("".join(pending))
            if lines or pending:
                self.stream.flush()
        except (OSError, ValueError):  # the stream went away (a closed pipe at exit)
            pass

    def _flusher(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            self.flush()


def _second(second: int) -> str:
    """A line's time up to the second (local time, as uvicorn's format gave it)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
