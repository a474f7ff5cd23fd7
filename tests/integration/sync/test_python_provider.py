"""flagd's Python provider (``openfeature-provider-flagd``, in-process mode) following a
real `flagedge serve` over flagd sync: READY, the five value types, pushes as
CONFIGURATION_CHANGED without a restart, no event for an unchanged document, serving on
through a flagedge restart and resyncing after it.

0.5.2 hashes ``fractional`` as flagedge does today (v2); 0.6.x hashes the CBOR way (v3),
against an environment set to ``--fractional-hash v3``.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ProxyFactory
from tests.integration.sync.conftest import SyncServer, start_sync_server
from tests.integration.sync.providers import PY_DRIVER, ProviderProcess
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC: dict[str, Any] = {
    "flags": {
        "bool-flag": {"state": "ENABLED", "variants": {"on": True, "off": False},
                      "defaultVariant": "off",
                      "targeting": {"if": [{"$ref": "is-beta"}, "on", None]}},
        "string-flag": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"},
                        "defaultVariant": "red", "metadata": {"owner": "web"}},
        "int-flag": {"state": "ENABLED", "variants": {"small": 1, "big": 1000},
                     "defaultVariant": "small",
                     "targeting": {"if": [{"in": ["@example.com", {"var": "email"}]},
                                          "big", "small"]}},
        "float-flag": {"state": "ENABLED", "variants": {"low": 0.25, "high": 0.75},
                       "defaultVariant": "low"},
        "object-flag": {"state": "ENABLED",
                        "variants": {"a": {"size": 1, "tags": ["x"]}, "b": {"size": 2}},
                        "defaultVariant": "a"},
        "split-flag": {"state": "ENABLED", "variants": {"one": "one", "two": "two"},
                       "defaultVariant": "one",
                       "targeting": {"fractional": [["one", 50], ["two", 50]]}},
    },
    "$evaluators": {"is-beta": {"==": [{"var": "tier"}, "beta"]}},
    "metadata": {"team": "checkout"},
}
BETA = {"targetingKey": "user-1", "tier": "beta", "email": "a@example.com"}
PLAIN = {"targetingKey": "user-2", "tier": "free", "email": "a@other.org"}
CASES = [("boolean", "bool-flag", False), ("string", "string-flag", ""),
         ("integer", "int-flag", 0), ("float", "float-flag", 0.0),
         ("object", "object-flag", {})]
SPLIT_USERS = [f"user-{i}" for i in range(40)]
GENERATIONS = [
    pytest.param("0.5.2", "v2", id="0.5.2-v2"),
    pytest.param("0.6.1", "v3", id="0.6.1-v3"),
]


def evals(context: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": t, "flag": f, "default": d, "context": context} for t, f, d in CASES]


def start_provider(python: Path, sync: SyncServer, tmp_path: Path,
                   processes: list[ProviderProcess], *, key: str | None = None
                   ) -> ProviderProcess:
    process = ProviderProcess([str(python), str(PY_DRIVER), "127.0.0.1", str(sync.port),
                               key or sync.key], tmp_path / "provider.log")
    processes.append(process)
    return process


def set_generation(sync: SyncServer, generation: str) -> None:
    if generation == "v2":
        return  # today's and the default: nothing to set
    subprocess.run([sys.executable, "-m", "proxy", "envs", "set", sync.proxy.env,
                    "--fractional-hash", generation, "--yes", "--redis", sync.proxy.redis.url],
                   check=True, capture_output=True, timeout=30)


def ofrep_values(sync: SyncServer, flag: str, users: list[str]) -> list[Any]:
    out = []
    with httpx.Client(base_url=sync.proxy.url, timeout=5,
                      headers={"Authorization": f"Bearer {sync.key}"}) as client:
        for user in users:
            body = client.post(f"/ofrep/v1/evaluate/flags/{flag}",
                               json={"context": {"targetingKey": user}}).json()
            out.append(body.get("value"))
    return out


@pytest.mark.parametrize(("version", "generation"), GENERATIONS)
def test_provider_follows_flagedge_live(version: str, generation: str,
                                        py_provider_python: Any, proxy_factory: ProxyFactory,
                                        provider_processes: list[ProviderProcess],
                                        tmp_path: Path) -> None:
    sync = start_sync_server(proxy_factory, DOC)
    set_generation(sync, generation)
    provider = start_provider(py_provider_python(version), sync, tmp_path, provider_processes)
    provider.wait_event("started")  # set_provider_and_wait returned: READY
    assert provider.count("PROVIDER_READY") >= 1

    # the five value types, targeting ($ref inlined) included, as flagedge answers them
    beta = provider.evaluate(evals(BETA))
    assert [r["value"] for r in beta] == [True, "#f00", 1000, 0.25, {"size": 1, "tags": ["x"]}]
    assert [r["variant"] for r in beta] == ["on", "red", "big", "low", "a"]
    assert all(r["error_code"] is None for r in beta)
    assert [r["value"] for r in provider.evaluate(evals(PLAIN))][:3] == [False, "#f00", 1]
    split = provider.evaluate([{"type": "string", "flag": "split-flag", "default": "",
                                "context": {"targetingKey": u}} for u in SPLIT_USERS])
    assert [r["value"] for r in split] == ofrep_values(sync, "split-flag", SPLIT_USERS)

    # a push reaches the provider without a restart
    changed = provider.count("PROVIDER_CONFIGURATION_CHANGED")
    doc = copy.deepcopy(DOC)
    doc["flags"]["string-flag"]["defaultVariant"] = "blue"
    sync.proxy.push(doc)
    provider.wait_event("PROVIDER_CONFIGURATION_CHANGED", changed + 1)
    assert provider.evaluate(evals(PLAIN))[1]["value"] == "#00f"

    # a new version whose sync document is byte-equal (an evaluator no flag uses) sends
    # nothing: the provider sees exactly one event for it and the next real change
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


def test_provider_serves_through_a_restart_and_resyncs(
        py_provider_python: Any, proxy_factory: ProxyFactory,
        provider_processes: list[ProviderProcess], tmp_path: Path) -> None:
    sync = start_sync_server(proxy_factory, DOC)
    provider = start_provider(py_provider_python("0.5.2"), sync, tmp_path, provider_processes)
    provider.wait_event("started")
    changed = provider.count("PROVIDER_CONFIGURATION_CHANGED")

    sync.proxy.stop()  # graceful: the stream ends UNAVAILABLE, the provider goes stale
    provider.wait_log("StatusCode.UNAVAILABLE")
    assert provider.evaluate(evals(BETA))[0]["value"] is True  # still serving its rules

    doc = copy.deepcopy(DOC)
    doc["flags"]["int-flag"]["variants"]["big"] = 2000
    sync.proxy.push(doc, wait=False)  # written to Redis while flagedge is down
    sync.proxy.start()
    provider.wait_event("PROVIDER_CONFIGURATION_CHANGED", changed + 1, timeout=30)
    assert provider.evaluate(evals(BETA))[2]["value"] == 2000
