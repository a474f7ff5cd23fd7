"""The sync gRPC server: grpc.aio on the serving process's own event loop (uvicorn's uvloop),
started and stopped with the HTTP server by ``proxy.server.app``.

Keepalive as DESIGN §9 says (the Go provider pings every 30 s with no open stream; a server
that counts those pings as abuse sends GOAWAY). ``grpc.so_reuseport`` is on only when
several ``serve`` workers share the port (each worker runs its own server: see
docs/design-notes.md); off, a second flagedge on the same port fails to start instead of
silently sharing it. Health (``grpc.health.v1``: SERVING once an environment has rules) and
reflection services are served beside the sync service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from proxy.config import Settings
from proxy.keys import KeyRing
from proxy.model import Change, FlagSet
from proxy.store import Store
from proxy.sync import sync_pb2, sync_pb2_grpc
from proxy.sync.caller import Gate
from proxy.sync.hub import MAX_MESSAGE_BYTES, DocumentHub
from proxy.sync.metrics import SyncStats
from proxy.sync.service import SyncService

log = logging.getLogger("flagedge.sync")

SERVICE = sync_pb2.DESCRIPTOR.services_by_name["FlagSyncService"].full_name
KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 30_000),  # our own pings find dead peers of idle streams
    ("grpc.keepalive_timeout_ms", 10_000),
)
SHUTDOWN = "flagedge is shutting down: reconnect"
STREAMS_END_S = 2.0  # how long streams get to send their UNAVAILABLE before the hard stop


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [*KEEPALIVE_OPTIONS,
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


class SyncServer:
    """One per serving process. ``start()`` binds ``settings.sync_port`` (raises when it
    cannot), ``stop()`` aborts every stream with UNAVAILABLE, then stops the server."""

    def __init__(self, settings: Settings, store: Store, keyring: KeyRing,
                 stats: SyncStats | None = None,
                 on_consumer: Callable[[str, str], None] | None = None):
        self.settings, self.store = settings, store
        self.stats = stats or SyncStats()
        self.hub = DocumentHub(store, self.stats, coalesce_s=settings.sse_coalesce_ms / 1000)
        self.gate = Gate(keyring, no_auth=settings.no_auth, env=settings.env)
        self.service = SyncService(self.hub, self.gate, self.stats, on_consumer)
        self.service.watch_keys(keyring)
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._serving: bool | None = None  # what health says now

    async def start(self) -> int:
        server = grpc.aio.server(options=server_options(self.settings))
        sync_pb2_grpc.add_FlagSyncServiceServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(f"{self._host()}:{self.settings.sync_port}")
        if not self.port:  # grpcio >= 1.5x raises itself; older ones return 0
            raise RuntimeError(f"cannot bind the sync port {self.settings.sync_port}")
        self.hub.start()
        self.store.subscribe(self._on_change)
        await server.start()
        self.server = server
        await self._update_health()
        log.info("flagd sync (gRPC) on port %d", self.port)
        return self.port

    def _host(self) -> str:
        host = self.settings.host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def _on_change(self, _change: Change, _flag_set: FlagSet) -> None:
        if self.store.ready != self._serving and self.server is not None:
            asyncio.get_running_loop().create_task(self._update_health())

    async def _update_health(self) -> None:
        self._serving = self.store.ready
        status = (health_pb2.HealthCheckResponse.SERVING if self._serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        await self.health.enter_graceful_shutdown()
        self.hub.stop_all(grpc.StatusCode.UNAVAILABLE, SHUTDOWN)
        await _until_no_watches(self.hub, STREAMS_END_S)
        await server.stop(grace=0.5)
        self.hub.close()
        log.info("flagd sync stopped")


async def _until_no_watches(hub: DocumentHub, timeout: float) -> None:
    """Wait (bounded) until every stream has sent its ending."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while hub.watches() and loop.time() < deadline:
        await asyncio.sleep(0.01)
