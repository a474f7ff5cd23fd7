"""Fixtures of the flagd sync tests: a real `flagedge serve` with its sync port on a real
redis-server, a server key of its environment, and the pinned real providers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ProxyFactory, ProxyServer
from tests.integration.sync.providers import (
    ProviderProcess,
    ProviderUnavailable,
    js_provider,
    python_provider,
)
from tests.redis_server import free_port


@dataclass
class SyncServer:
    proxy: ProxyServer
    port: int  # the sync (gRPC) port
    key: str  # a server key of proxy.env

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of flagedge's /metrics (0 when absent)."""
        text = httpx.get(f"{self.proxy.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return sample.value
        return 0.0


def start_sync_server(proxy_factory: ProxyFactory, doc: dict | None = None,
                      extra_args: list[str] | None = None) -> SyncServer:
    port = free_port()
    proxy = proxy_factory(extra_args=["--sync-port", str(port), *(extra_args or [])])
    if doc is not None:
        proxy.push(doc)
    return SyncServer(proxy, port, proxy.create_key("server"))


@pytest.fixture(scope="session")
def py_provider_python() -> Callable[[str], Path]:
    """``python_of(version)``: the python of a venv with that provider version (installed
    once per version and machine)."""
    def python_of(version: str) -> Path:
        try:
            return python_provider(version)
        except ProviderUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
    return python_of


@pytest.fixture(scope="session")
def js_provider_prefix() -> Path:
    try:
        return js_provider()
    except ProviderUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def provider_processes(tmp_path: Path) -> Iterator[list[ProviderProcess]]:
    """Provider processes a test starts go here and are stopped after it."""
    started: list[ProviderProcess] = []
    yield started
    for process in started:
        process.close()
