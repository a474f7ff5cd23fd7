"""flagd's JavaScript provider (``@openfeature/flagd-provider`` 0.16.1, pinned with a
package-lock, in-process mode under node) following a real `flagedge serve` over flagd sync:
READY, the five value types, a push as CONFIGURATION_CHANGED without a restart, nothing sent
for an unchanged document, serving through a restart and resyncing after. It can only send
a selector, so the key travels as ``key=`` there: its flags' ``scope`` metadata, which it
fills from the selector unless the document sets one, must never show the key."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ProxyFactory
from tests.integration.sync.conftest import SyncServer, start_sync_server
from tests.integration.sync.providers import JS_DRIVER, ProviderProcess
from tests.integration.sync.test_python_provider import (
    BETA,
    DOC,
    PLAIN,
    SPLIT_USERS,
    evals,
    ofrep_values,
)
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


def start_js(prefix: Path, sync: SyncServer, tmp_path: Path,
             processes: list[ProviderProcess]) -> ProviderProcess:
    node = shutil.which("node")
    assert node is not None
    process = ProviderProcess([node, str(JS_DRIVER), str(prefix), "127.0.0.1", str(sync.port),
                               f"key={sync.key}"], tmp_path / "js-provider.log")
    processes.append(process)
    return process


def test_js_provider_follows_flagedge_live(js_provider_prefix: Path,
                                           proxy_factory: ProxyFactory,
                                           provider_processes: list[ProviderProcess],
                                           tmp_path: Path) -> None:
    sync = start_sync_server(proxy_factory, DOC)
    provider = start_js(js_provider_prefix, sync, tmp_path, provider_processes)
    provider.wait_event("started")
    assert provider.count("PROVIDER_READY") >= 1

    beta = provider.evaluate(evals(BETA))
    assert [r["value"] for r in beta] == [True, "#f00", 1000, 0.25, {"size": 1, "tags": ["x"]}]
    assert [r["variant"] for r in beta] == ["on", "red", "big", "low", "a"]
    assert all(r["error_code"] is None for r in beta)
    assert [r["value"] for r in provider.evaluate(evals(PLAIN))][:3] == [False, "#f00", 1]
    # the key never leaks into flag metadata: scope is the environment's name
    assert all(r["metadata"].get("scope") == sync.proxy.env for r in beta)
    assert beta[1]["metadata"] == {"scope": sync.proxy.env, "team": "checkout", "owner": "web"}
    split = provider.evaluate([{"type": "string", "flag": "split-flag", "default": "",
                                "context": {"targetingKey": u}} for u in SPLIT_USERS])
    assert [r["value"] for r in split] == ofrep_values(sync, "split-flag", SPLIT_USERS)

    changed = provider.count("PROVIDER_CONFIGURATION_CHANGED")
    doc = copy.deepcopy(DOC)
    doc["flags"]["string-flag"]["defaultVariant"] = "blue"
    sync.proxy.push(doc)
    provider.wait_event("PROVIDER_CONFIGURATION_CHANGED", changed + 1)
    assert provider.evaluate(evals(PLAIN))[1]["value"] == "#00f"

    changed = provider.count("PROVIDER_CONFIGURATION_CHANGED")
    sent = sync.metric("flagedge_sync_messages_total", rpc="SyncFlags", env=sync.proxy.env)
    unused = copy.deepcopy(doc)
    unused["$evaluators"]["unused"] = {"==": [1, 1]}
    version = sync.proxy.push(unused)
    wait_until(lambda: sync.metric("flagedge_sync_document_version",
                                   env=sync.proxy.env) >= version,
               timeout=10, what="flagedge to render the unchanged document")
    unused["flags"]["float-flag"]["defaultVariant"] = "high"
    sync.proxy.push(unused)
    provider.wait_event("PROVIDER_CONFIGURATION_CHANGED", changed + 1)
    assert provider.evaluate(evals(PLAIN))[3]["value"] == 0.75
    assert provider.count("PROVIDER_CONFIGURATION_CHANGED") == changed + 1
    assert sync.metric("flagedge_sync_messages_total", rpc="SyncFlags",
                       env=sync.proxy.env) == sent + 1


def test_js_provider_serves_through_a_restart_and_resyncs(
        js_provider_prefix: Path, proxy_factory: ProxyFactory,
        provider_processes: list[ProviderProcess], tmp_path: Path) -> None:
    sync = start_sync_server(proxy_factory, DOC)
    provider = start_js(js_provider_prefix, sync, tmp_path, provider_processes)
    provider.wait_event("started")
    changed = provider.count("PROVIDER_CONFIGURATION_CHANGED")

    sync.proxy.stop()  # the stream ends UNAVAILABLE (never OK: JS would not reconnect)
    provider.wait_log("14 UNAVAILABLE")
    assert provider.evaluate(evals(BETA))[0]["value"] is True

    doc: dict[str, Any] = copy.deepcopy(DOC)
    doc["flags"]["int-flag"]["variants"]["big"] = 2000
    sync.proxy.push(doc, wait=False)
    sync.proxy.start()
    provider.wait_event("PROVIDER_CONFIGURATION_CHANGED", changed + 1, timeout=30)
    assert provider.evaluate(evals(BETA))[2]["value"] == 2000
