"""flagd sync without Redis: `flagedge serve --flags FILE --keys KEYS --sync-port P` serves the
file's document to providers, follows edits of the file, and checks keys from the file."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import orjson
import pytest

from proxy.dev.devredis import free_port
from proxy.keys import KeyRecord, dump_export, generate_key, hash_key
from proxy.sync import sync_pb2, sync_pb2_grpc
from tests.integration.conftest import ProxyFactory
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"banner": {"state": "ENABLED", "variants": {"on": True, "off": False},
                            "defaultVariant": "on"}}}


def keys_file(path: Path, env: str) -> dict[str, str]:
    raw = {kind: generate_key(kind) for kind in ("server", "client")}
    path.write_bytes(dump_export({hash_key(k): KeyRecord(id=hash_key(k)[:12], env=env, kind=kind,
                                                         name=kind, created_at=time.time())
                                  for kind, k in raw.items()}))
    return raw


def fetch(target: str, key: str) -> dict:
    with grpc.insecure_channel(target) as channel:
        stub = sync_pb2_grpc.FlagSyncServiceStub(channel)
        reply = stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(provider_id=key), timeout=5)
    return orjson.loads(reply.flag_configuration)


def test_a_flag_file_is_served_over_flagd_sync_and_followed(proxy_factory: ProxyFactory,
                                                            tmp_path: Path):
    flags, keys = tmp_path / "flags.json", tmp_path / "keys.json"
    flags.write_bytes(orjson.dumps(DOC))
    raw = keys_file(keys, "test")
    port = free_port()
    proxy_factory(redis=None, extra_args=["--flags", str(flags), "--keys", str(keys),
                                          "--sync-port", str(port)])
    target = f"127.0.0.1:{port}"
    doc = fetch(target, raw["server"])
    assert doc["flags"]["banner"]["defaultVariant"] == "on"
    assert doc["metadata"]["scope"] == "test"
    with pytest.raises(grpc.RpcError) as refused:
        fetch(target, raw["client"])
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    edited = {"flags": {"banner": {**DOC["flags"]["banner"], "defaultVariant": "off"}}}
    flags.write_bytes(orjson.dumps(edited))
    wait_until(lambda: fetch(target, raw["server"])["flags"]["banner"]["defaultVariant"] == "off",
               timeout=10, what="the edited file served over sync")
