"""`serve --workers N --sync-port P`: every worker runs its own sync server on the shared
port (``grpc.so_reuseport``; docs/design-notes.md says why not one sync process), the
kernel spreads the providers' connections over them, and a push reaches every stream."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import orjson
import psutil
import pytest

from proxy.sync import sync_pb2, sync_pb2_grpc
from tests.integration.conftest import ProxyFactory
from tests.integration.sync.conftest import start_sync_server
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"a": "A", "b": "B"},
                       "defaultVariant": "a"}}}
STREAMS = 24  # all on one of two workers by chance: 2 * 2**-24


def _follow(channel: grpc.Channel, key: str, seen: list[Any]) -> None:
    stub = sync_pb2_grpc.FlagSyncServiceStub(channel)
    try:
        for message in stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id=key)):
            seen.append(orjson.loads(message.flag_configuration))
    except grpc.RpcError:
        pass


def test_workers_share_the_sync_port_and_all_streams_follow(proxy_factory: ProxyFactory
                                                            ) -> None:
    sync = start_sync_server(proxy_factory, DOC, extra_args=["--workers", "2"])
    assert sync.proxy.proc is not None
    supervisor = psutil.Process(sync.proxy.proc.pid)

    def listening() -> int:
        """Worker processes listening on the sync port (the second may start later)."""
        return sum(1 for w in supervisor.children(recursive=True)
                   if any(c.status == psutil.CONN_LISTEN and c.laddr.port == sync.port
                          for c in w.net_connections("tcp")))

    # Else, on a loaded machine, every stream lands on the one worker already bound.
    wait_until(lambda: listening() == 2, timeout=20, what="both workers bound to the sync port")
    # a subchannel pool of its own each: one TCP connection per channel, as separate
    # provider processes have (grpc shares one between equal channels of a process)
    channels = [grpc.insecure_channel(sync.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(STREAMS)]
    seen: list[list[Any]] = [[] for _ in channels]
    try:
        for channel, got in zip(channels, seen, strict=True):
            threading.Thread(target=_follow, args=(channel, sync.key, got), daemon=True).start()
        wait_until(lambda: all(seen), timeout=20, what="every stream's first document")

        workers = supervisor.children(recursive=True)
        per_worker = [sum(1 for c in w.net_connections("tcp")
                          if c.laddr and c.laddr.port == sync.port and c.raddr)
                      for w in workers]
        assert sum(1 for n in per_worker if n) == 2, per_worker  # both workers hold some
        assert sum(per_worker) == STREAMS

        doc = {"flags": {"f": {**DOC["flags"]["f"], "defaultVariant": "b"}}}
        sync.proxy.push(doc)
        wait_until(lambda: all(s[-1]["flags"]["f"]["defaultVariant"] == "b" for s in seen),
                   timeout=10, what="the push on every stream")
    finally:
        for channel in channels:
            channel.close()


def test_a_second_serve_on_a_taken_sync_port_fails_to_start(proxy_factory: ProxyFactory
                                                            ) -> None:
    sync = start_sync_server(proxy_factory, DOC)
    second = proxy_factory(extra_args=["--sync-port", str(sync.port)], start=False)
    with pytest.raises(RuntimeError, match="exited early"):
        second.start()
    assert "sync port" in second.logs() or "Failed to bind" in second.logs()
