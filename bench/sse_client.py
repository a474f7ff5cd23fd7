"""The SSE load generator of bench/sse.py: N streams from one process, lean enough that one core
of it is not what the bench measures.

One asyncio Protocol per stream over a raw socket (no HTTP client library: at 10,000 streams an
httpx or aiohttp reader per stream costs more CPU per event than the server under test). It is
driven over stdin/stdout by bench/sse.py:

- it opens the streams and prints ``READY`` once every stream has its first frame;
- on ``ARM`` it forgets the last round and answers ``ARMED``; the driver then writes to Redis
  and the client prints ``RESULT {json}`` when every stream has seen the next event (or after
  the timeout): each stream's receipt time (``time.monotonic()``, the clock the driver stamps
  the write with), the mean size of the received frame, and this process's CPU time in the
  round (when it nears the round's wall time, the client is the bottleneck);
- on ``QUIT`` it closes everything and exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time

import orjson

CONNECT_BATCH = 250  # connections opened concurrently (stay under the listen backlog)
MARKERS = {"events": b"event: message", "rules": b"event: patch", "evaluated": b"event: patch"}


class Round:
    """What the streams share: counts for the open phase, then one round's receipts."""

    __slots__ = ("all_got", "all_ready", "armed", "failed", "frame_bytes", "got", "marker", "n",
                 "ready")

    def __init__(self, n: int, marker: bytes):
        self.n, self.marker = n, marker
        self.ready = self.failed = self.got = self.frame_bytes = 0
        self.armed = False
        self.all_ready = asyncio.Event()
        self.all_got = asyncio.Event()


class Reader(asyncio.Protocol):
    """One stream: open once its head and first frame arrived; then, while a round is armed,
    stamps the first data that carries the round's event."""

    __slots__ = ("buf", "got_at", "open", "request", "round")

    def __init__(self, request: bytes, round_: Round):
        self.request, self.round = request, round_
        self.buf = b""
        self.open = False
        self.got_at = 0.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        r = self.round
        if not self.open:
            self._opening(data)
            return
        if not r.armed or self.got_at:
            return
        at = data.find(r.marker)
        if at < 0:
            return  # a heartbeat
        self.got_at = time.monotonic()
        end = data.find(b"\n\n", at)
        r.frame_bytes += (end + 2 - at) if end >= 0 else len(data) - at
        r.got += 1
        if r.got == r.n:
            r.all_got.set()

    def _opening(self, data: bytes) -> None:
        r = self.round
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            r.failed += 1
            self.buf = b""
            return
        if b"\n\n" not in body:
            return  # the head arrived, the first frame not yet
        self.open, self.buf = True, b""
        r.ready += 1
        if r.ready == r.n:
            r.all_ready.set()


def stream_path(stream: str, i: int) -> str:
    if stream == "evaluated":  # a context of its own per client: nothing shared
        ctx = base64.urlsafe_b64encode(orjson.dumps({"targetingKey": f"user-{i}"}))
        return "/v1/stream/evaluated?context=" + ctx.rstrip(b"=").decode()
    return {"events": "/ofrep/v1/events", "rules": "/v1/stream/rules"}[stream]


def request(stream: str, i: int, key: str) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"GET {stream_path(stream, i)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\n{auth}\r\n").encode()


async def open_streams(port: int, n: int, stream: str, key: str, round_: Round
                       ) -> tuple[list[Reader], list[asyncio.BaseTransport]]:
    loop = asyncio.get_running_loop()
    readers: list[Reader] = []
    transports: list[asyncio.BaseTransport] = []
    for start in range(0, n, CONNECT_BATCH):
        batch = [loop.create_connection(lambda i=i: Reader(request(stream, i, key), round_),
                                        "127.0.0.1", port)
                 for i in range(start, min(start + CONNECT_BATCH, n))]
        for transport, proto in await asyncio.gather(*batch):
            readers.append(proto)
            transports.append(transport)
    return readers, transports


async def one_round(readers: list[Reader], round_: Round, timeout: float) -> dict:
    for r in readers:
        r.got_at = 0.0
    round_.got = round_.frame_bytes = 0
    round_.all_got.clear()
    round_.armed = True
    cpu0 = time.process_time()
    print("ARMED", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(round_.all_got.wait(), timeout)
    round_.armed = False
    return {"got": [r.got_at for r in readers if r.got_at], "missing": round_.n - round_.got,
            "frame_bytes": round_.frame_bytes / max(1, round_.got),
            "client_cpu_ms": (time.process_time() - cpu0) * 1000}


async def client_main(port: int, n: int, stream: str, key: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    round_ = Round(n, MARKERS[stream])
    readers, transports = await open_streams(port, n, stream, key, round_)
    try:
        await asyncio.wait_for(round_.all_ready.wait(), timeout)
    except TimeoutError:
        print(f"ERROR only {round_.ready}/{n} streams open ({round_.failed} refused)",
              flush=True)
        return
    print("READY", flush=True)
    while (await lines.readline()).strip() == b"ARM":
        result = await one_round(readers, round_, timeout)
        print("RESULT " + orjson.dumps(result).decode(), flush=True)
    for t in transports:
        t.close()


def main(port: int, n: int, stream: str, key: str, timeout: float) -> None:
    from benchutil import raise_nofile

    raise_nofile()
    import uvloop

    uvloop.run(client_main(port, n, stream, key, timeout))
