"""``flagd.sync.v1.FlagSyncService`` (DESIGN §9).

- ``SyncFlags``: the caller's environment's document at once, then again only when its
  content changed (coalesced, latest only). A stream never ends with OK (the JS provider
  then never reconnects): it ends when the client leaves, or aborts with UNAVAILABLE at
  shutdown or UNAUTHENTICATED when its key is revoked or changed.
- ``FetchAllFlags``: the same document once.
- ``GetMetadata``: UNIMPLEMENTED, without auth (the Python provider calls it without
  credentials before each connect; an empty answer would kill its watcher).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc

from proxy.keys import KeyRecord, KeyRing
from proxy.sync import sync_pb2, sync_pb2_grpc
from proxy.sync.caller import Caller, Denied, Gate
from proxy.sync.hub import DocumentHub, Watch
from proxy.sync.metrics import SyncStats

log = logging.getLogger("flagedge.sync")

REVOKED = "the API key of this stream was revoked or changed"
NO_RULES = "no rules are loaded for this environment yet"


class SyncService(sync_pb2_grpc.FlagSyncServiceServicer):
    def __init__(self, hub: DocumentHub, gate: Gate, stats: SyncStats,
                 on_consumer: Callable[[str, str], None] | None = None):
        self.hub, self.gate, self.stats = hub, gate, stats
        # (env, key id) of a caller taking rules to evaluate elsewhere: insights' usage
        # completeness (a provider reporting no exposures leaves usage partly unknown).
        self.on_consumer = on_consumer

    def watch_keys(self, keyring: KeyRing) -> None:
        """End the streams of a key the ring reports revoked or changed (within the event
        loop turn that applies the announcement)."""
        keyring.subscribe(self._on_key_changed)

    def _on_key_changed(self, record: KeyRecord) -> None:
        for watch in self.hub.watches():
            if watch.caller.key_id == record.id and not self.gate.still_valid(watch.caller):
                self.stats.refused("revoked")
                watch.stop(grpc.StatusCode.UNAUTHENTICATED, REVOKED)

    async def _caller(self, provider_id: str, selector: str,
                      context: grpc.aio.ServicerContext) -> Caller:
        found = self.gate.decide(provider_id, selector, context.invocation_metadata() or ())
        if isinstance(found, Denied):
            self.stats.refused(found.reason)
            await context.abort(found.code, found.details)
        assert isinstance(found, Caller)
        if self.on_consumer is not None:
            self.on_consumer(found.env, found.key_id)
        return found

    async def SyncFlags(self, request: sync_pb2.SyncFlagsRequest,
                        context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[sync_pb2.SyncFlagsResponse]:
        caller = await self._caller(request.provider_id, request.selector, context)
        watch = self.hub.watch(caller)
        self.stats.stream_opened(caller.env)
        try:
            async for response in self._documents(watch):
                yield response
                self.stats.sent("SyncFlags", caller.env)
            assert watch.end is not None
            await context.abort(*watch.end)
        finally:
            self.stats.stream_closed(caller.env)
            self.hub.unwatch(watch)

    async def _documents(self, watch: Watch) -> AsyncIterator[sync_pb2.SyncFlagsResponse]:
        """Each new document of the watch's environment, the current one first, until the
        watch is told to end. Between two sends only the latest document counts."""
        sent = None
        env = watch.caller.env
        while watch.end is None:
            watch.wake.clear()
            doc = self.hub.current(env)
            if doc is not None and doc is not sent:
                sent = doc
                yield doc.stream  # returns when the transport took it (flow control)
                continue
            await watch.wake.wait()

    async def FetchAllFlags(self, request: sync_pb2.FetchAllFlagsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> sync_pb2.FetchAllFlagsResponse:
        caller = await self._caller(request.provider_id, request.selector, context)
        doc = self.hub.current(caller.env)
        if doc is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_RULES)
        assert doc is not None
        self.stats.sent("FetchAllFlags", caller.env)
        return doc.fetch

    async def GetMetadata(self, request: sync_pb2.GetMetadataRequest,
                          context: grpc.aio.ServicerContext) -> sync_pb2.GetMetadataResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "GetMetadata is deprecated and not served: flagedge sends no "
                            "sync context")
        raise AssertionError("unreachable")  # abort raises
