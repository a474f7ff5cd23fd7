"""Connection-level limits of a serving process: how long a request may take to arrive, how
many connections one worker holds, its open-file limit, and the counters of what was refused.

uvicorn (0.55) has no read timeout for a request's head or body (a client that sends one byte
a minute holds its connection, and its slot, forever) and its ``limit_concurrency`` answers a
plain-text 503 only once the request head is in. The protocol in
:mod:`proxy.server.http_protocol` enforces :class:`ConnectionLimits`; :func:`configure` sets
them in each process that serves (``serve`` itself, or every ``--workers`` process through
``proxy.server.app.factory``), and raises the open-file limit there.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.api.client_address import TrustedProxies
from proxy.config import Settings

log = logging.getLogger("flagedge.connections")

# File descriptors a worker uses besides its client connections: the listening socket, Redis
# clients, log files, metrics snapshots, the event loop's own.
RESERVED_FDS = 256
# When the hard limit is "unlimited", the kernel still caps a process at fs.nr_open (1 << 20
# by default); asking for more fails.
UNLIMITED_TARGET = 1 << 20


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds from connect (or the request's first byte) to its head
    body_timeout: float = 30.0  # seconds from the head to the end of the body
    max_connections: int = 25_000  # per worker; beyond, a 503 and the connection closes
    trusted: TrustedProxies = field(default_factory=TrustedProxies)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.header_timeout, settings.body_timeout, settings.max_connections,
                   TrustedProxies(settings.trusted_proxies))


class ProcessConnections:
    """This process's limits and counters (one per process: uvicorn builds a protocol per
    connection from a class, so they live here, not on an object it hands over).
    ``refused`` counts connections ended early by reason (``header_timeout``,
    ``body_timeout``, ``connection_limit``); ``open`` is the connections held now."""

    def __init__(self) -> None:
        self.limits = ConnectionLimits()
        self.refused: dict[str, int] = {}
        self.open = 0

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


PROCESS = ProcessConnections()


def error_response(status: int, reason: bytes, code: str, details: str,
                   retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with the API's JSON error body that closes the connection,
    for answers written by the protocol itself, outside any ASGI app."""
    body = orjson.dumps({"errorCode": code, "errorDetails": details})
    head = [b"HTTP/1.1 %d %s" % (status, reason), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close"]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (each connection is a file
    descriptor; distributions start processes at 1024); log before and after, and warn when
    the result is below ``needed``. Returns (before, after)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    after = before
    if before != resource.RLIM_INFINITY and before < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            after = target
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s",
                        before, target, exc)
    log.info("open-file limit (RLIMIT_NOFILE): soft %s -> %s, hard %s",
             _limit(before), _limit(after), _limit(hard))
    if after != resource.RLIM_INFINITY and after < needed:
        log.warning("open-file limit %d is below the %d that max_connections and "
                    "sse_max_connections need: connections beyond it fail at accept "
                    "(raise the hard limit: ulimit -Hn, LimitNOFILE=, --ulimit nofile=)",
                    after, needed)
    return before, after


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def files_needed(settings: Settings) -> int:
    """Descriptors a worker needs at its limits: every connection (streams are connections
    too, but a stream cap above the connection limit is honoured as asked) plus the reserve."""
    return max(settings.max_connections, settings.sse_max_connections) + RESERVED_FDS


def configure(settings: Settings) -> None:
    """In a process that serves: the protocol's limits from ``settings``, the open-file limit
    raised."""
    PROCESS.limits = ConnectionLimits.from_settings(settings)
    raise_open_files(files_needed(settings))


class ConnectionsCollector:
    """Prometheus: the refusals and the connections held, of this worker (not summed over
    workers, like ``flagedge_sse_refused``)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "flagedge_http_connections_refused",
            "Connections this worker closed early: slow request head or body, over the limit",
            labels=["reason"])
        for reason, n in sorted(PROCESS.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield GaugeMetricFamily("flagedge_http_connections", "Open HTTP connections (this worker)",
                                value=PROCESS.open)
