"""The sync service's Prometheus metrics: its own counters (plain ints and dicts, counted
on the event loop) and a collector that turns them into families at scrape time.

With several workers (``metrics_dir`` set) each worker writes its counters to
``sync-PID.json`` there (the server's metrics clock calls :meth:`SyncStats.write_snapshot`);
a scrape sums every worker's (its own live), counters always, open streams only from
snapshots younger than ``LIVE_SNAPSHOT_S`` (a dead worker's streams are gone).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LIVE_SNAPSHOT_S = 10.0
PREFIX = "sync-"


class SyncStats:
    """What the sync service counts (one per worker)."""

    def __init__(self) -> None:
        self.open_streams: dict[str, int] = {}  # env -> open SyncFlags streams
        self.messages: dict[tuple[str, str], int] = {}  # (rpc, env) -> responses sent
        self.refused_size: dict[str, int] = {}  # env -> documents over the message limit
        self.refusals: dict[str, int] = {}  # reason -> calls refused
        # env -> rules version its document was last rendered from (sent only when changed)
        self.rendered: dict[str, int] = {}

    def stream_opened(self, env: str) -> None:
        self.open_streams[env] = self.open_streams.get(env, 0) + 1

    def stream_closed(self, env: str) -> None:
        self.open_streams[env] = self.open_streams.get(env, 1) - 1

    def sent(self, rpc: str, env: str) -> None:
        key = (rpc, env)
        self.messages[key] = self.messages.get(key, 0) + 1

    def too_large(self, env: str) -> None:
        self.refused_size[env] = self.refused_size.get(env, 0) + 1

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    # -- multiprocess ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"at": time.time(), "open_streams": self.open_streams,
                "messages": [[r, e, n] for (r, e), n in self.messages.items()],
                "refused_size": self.refused_size, "refusals": self.refusals,
                "rendered": self.rendered}

    def write_snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{PREFIX}{os.getpid()}.tmp"
        tmp.write_bytes(orjson.dumps(self.snapshot()))
        tmp.replace(directory / f"{PREFIX}{os.getpid()}.json")


def merged(stats: SyncStats, directory: Path | None) -> dict[str, Any]:
    """This worker's live counters plus every other worker's last snapshot."""
    snaps = [stats.snapshot()]
    if directory is not None and directory.is_dir():
        own = f"{PREFIX}{os.getpid()}.json"
        for path in directory.glob(f"{PREFIX}*.json"):
            if path.name != own:
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    snaps.append(orjson.loads(path.read_bytes()))
    now = time.time()
    out: dict[str, Any] = {"open_streams": {}, "messages": {}, "refused_size": {},
                           "refusals": {}, "rendered": {}}
    for snap in snaps:
        if now - snap["at"] <= LIVE_SNAPSHOT_S:
            _add(out["open_streams"], snap["open_streams"].items())
            for env, version in snap.get("rendered", {}).items():
                out["rendered"][env] = max(version, out["rendered"].get(env, version))
        _add(out["messages"], (((r, e), n) for r, e, n in snap["messages"]))
        _add(out["refused_size"], snap["refused_size"].items())
        _add(out["refusals"], snap["refusals"].items())
    return out


def _add(into: dict[Any, int], items: Any) -> None:
    for key, n in items:
        into[key] = into.get(key, 0) + n


class SyncCollector:
    def __init__(self, stats: SyncStats, directory: Path | None = None):
        self.stats, self.directory = stats, directory

    def describe(self) -> list[Metric]:
        return []  # unchecked collector, like the HTTP one

    def collect(self) -> Iterator[Metric]:
        m = merged(self.stats, self.directory)
        streams = GaugeMetricFamily("flagedge_sync_streams", "Open flagd SyncFlags streams",
                                    labels=["env"])
        for env, n in sorted(m["open_streams"].items()):
            streams.add_metric([env], n)
        yield streams
        sent = CounterMetricFamily("flagedge_sync_messages",
                                   "flagd sync responses sent, by RPC and environment",
                                   labels=["rpc", "env"])
        for (rpc, env), n in sorted(m["messages"].items()):
            sent.add_metric([rpc, env], n)
        yield sent
        size = CounterMetricFamily(
            "flagedge_sync_documents_too_large",
            "Sync documents refused for exceeding the 4 MB gRPC message limit (the last "
            "good document stays)", labels=["env"])
        for env, n in sorted(m["refused_size"].items()):
            size.add_metric([env], n)
        yield size
        refusals = CounterMetricFamily("flagedge_sync_refusals",
                                       "Sync calls refused, by reason", labels=["reason"])
        for reason, n in sorted(m["refusals"].items()):
            refusals.add_metric([reason], n)
        yield refusals
        rendered = GaugeMetricFamily(
            "flagedge_sync_document_version",
            "Rules version each environment's sync document was last rendered from (newest "
            "over workers; a render equal to the last document is not sent)", labels=["env"])
        for env, version in sorted(m["rendered"].items()):
            rendered.add_metric([env], version)
        yield rendered
