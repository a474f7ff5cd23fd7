"""The sync port's gate and its side services, with a real gRPC client against a real
`flagedge serve` on Redis: who may sync which environment (each refusal its status and
counted by reason, nothing secret logged), revocation ending open streams within a second,
GetMetadata UNIMPLEMENTED without auth, shutdown as UNAVAILABLE, health and reflection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proxy.sync import sync_pb2, sync_pb2_grpc
from tests.integration.conftest import ProxyFactory
from tests.integration.sync.conftest import SyncServer, start_sync_server
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"a": "A", "b": "B"},
                       "defaultVariant": "a"}}}
OTHER_DOC = {"flags": {"g": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}}}
Code = grpc.StatusCode


@pytest.fixture
def sync(proxy_factory: ProxyFactory) -> SyncServer:
    server = start_sync_server(proxy_factory, DOC)
    server.proxy.push(OTHER_DOC, env="other")
    return server


@pytest.fixture
def stub(sync: SyncServer) -> Iterator[sync_pb2_grpc.FlagSyncServiceStub]:
    with grpc.insecure_channel(sync.target) as channel:
        yield sync_pb2_grpc.FlagSyncServiceStub(channel)


def first(stub: Any, metadata: tuple[tuple[str, str], ...] = (), **request: str) -> Any:
    """The first SyncFlags message's document, or the RpcError that ended the call."""
    call = stub.SyncFlags(sync_pb2.SyncFlagsRequest(**request), metadata=metadata, timeout=10)
    try:
        return orjson.loads(next(call).flag_configuration)
    except grpc.RpcError as exc:
        return exc
    finally:
        call.cancel()


def status(result: Any) -> Code | None:
    return result.code() if isinstance(result, grpc.RpcError) else None


def test_who_may_sync_which_environment(sync: SyncServer, stub: Any) -> None:
    env, key = sync.proxy.env, sync.key
    client_key = sync.proxy.create_key("client")
    admin_key = sync.proxy.create_key("admin")
    other_key = sync.proxy.create_key("server", env="other")

    # a server or admin key, in any of the three places, syncs its own environment
    for doc in (first(stub, provider_id=key), first(stub, provider_id=admin_key),
                first(stub, (("authorization", f"Bearer {key}"),), provider_id="my-app"),
                first(stub, selector=f"key={key}"),
                first(stub, (("flagd-selector", f"env={env},key={key}"),)),
                first(stub, provider_id=key, selector=env)):
        assert not isinstance(doc, grpc.RpcError), doc
        assert set(doc["flags"]) == {"f"} and doc["metadata"] == {"scope": env}
    assert set(first(stub, provider_id=other_key)["flags"]) == {"g"}  # the key's env

    refused = {
        "no_key": first(stub),
        "unknown_key": first(stub, provider_id="fe_server_not-a-key"),
        "client_key": first(stub, provider_id=client_key),
        "other_env": first(stub, provider_id=key, selector="env=other"),
        "bare_other_env": first(stub, selector=f"other,key={key}"),
        "bad_authorization": first(stub, (("authorization", f"Basic {key}"),)),
    }
    assert {name: status(r) for name, r in refused.items()} == {
        "no_key": Code.UNAUTHENTICATED, "unknown_key": Code.UNAUTHENTICATED,
        "client_key": Code.PERMISSION_DENIED, "other_env": Code.PERMISSION_DENIED,
        "bare_other_env": Code.PERMISSION_DENIED, "bad_authorization": Code.UNAUTHENTICATED}
    with pytest.raises(grpc.RpcError) as fetch_refused:
        stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(provider_id=client_key), timeout=5)
    assert fetch_refused.value.code() is Code.PERMISSION_DENIED
    fetched = stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(provider_id=key), timeout=5)
    assert set(orjson.loads(fetched.flag_configuration)["flags"]) == {"f"}

    counted = {reason: sync.metric("flagedge_sync_refusals_total", reason=reason)
               for reason in ("no_key", "unknown_key", "client_key", "other_env",
                              "bad_authorization")}
    assert counted == {"no_key": 1, "unknown_key": 1, "client_key": 2, "other_env": 2,
                       "bad_authorization": 1}
    logs = sync.proxy.logs()
    assert all(secret not in logs for secret in (key, client_key, admin_key, other_key,
                                                 "fe_server_not-a-key"))


def test_get_metadata_is_unimplemented_without_auth(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as answer:
        stub.GetMetadata(sync_pb2.GetMetadataRequest(), timeout=5)
    assert answer.value.code() is Code.UNIMPLEMENTED


def _watch(call: Any, seen: list[Any], ended: list[Any]) -> None:
    try:
        for message in call:
            seen.append(orjson.loads(message.flag_configuration))
    except grpc.RpcError as exc:
        ended.append((exc.code(), time.monotonic(), exc.details()))


def test_a_revoked_key_ends_its_open_streams_within_a_second(sync: SyncServer,
                                                           stub: Any) -> None:
    doomed = sync.proxy.create_key("server")
    seen: list[Any] = []
    ended: list[Any] = []
    kept_seen: list[Any] = []
    kept_ended: list[Any] = []
    call = stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id=doomed))
    kept = stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id=sync.key))
    threads = [threading.Thread(target=_watch, args=(call, seen, ended), daemon=True),
               threading.Thread(target=_watch, args=(kept, kept_seen, kept_ended), daemon=True)]
    for thread in threads:
        thread.start()
    wait_until(lambda: seen and kept_seen, timeout=10, what="both streams' first document")
    revoked_at = time.monotonic()
    sync.proxy.revoke_key(doomed)
    wait_until(lambda: ended, timeout=5, what="the revoked key's stream to end")
    code, at, _details = ended[0]
    assert code is Code.UNAUTHENTICATED and at - revoked_at < 1.0
    assert kept_ended == []  # another key's stream stays open
    kept.cancel()
    assert status(first(stub, provider_id=doomed)) is Code.UNAUTHENTICATED
    assert sync.metric("flagedge_sync_refusals_total", reason="revoked") == 1


def test_shutdown_ends_streams_unavailable(sync: SyncServer, stub: Any) -> None:
    seen: list[Any] = []
    ended: list[Any] = []
    call = stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id=sync.key))
    threading.Thread(target=_watch, args=(call, seen, ended), daemon=True).start()
    wait_until(lambda: seen, timeout=10, what="the first document")
    assert sync.metric("flagedge_sync_streams", env=sync.proxy.env) == 1
    sync.proxy.stop()
    wait_until(lambda: ended, timeout=15, what="the stream to end")
    # our own ending (grpc's hard stop would say UNAVAILABLE too, without a reason)
    assert ended[0][0] is Code.UNAVAILABLE and "shutting down" in ended[0][2]


def test_health_and_reflection_answer(sync: SyncServer) -> None:
    with grpc.insecure_channel(sync.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "flagd.sync.v1.FlagSyncService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"flagd.sync.v1.FlagSyncService", "grpc.health.v1.Health"} <= names
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="flagd.sync.v1.FlagSyncService")
        reply = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        assert reply.file_descriptor_response.file_descriptor_proto  # the vendored proto
