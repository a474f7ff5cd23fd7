"""Hardening fixtures: the real `flagedge serve` fixtures of tests/integration (re-exported),
plus a two-environment setup with keys of every kind for the isolation tests."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

# Re-exported so pytest finds them here too (conftest fixtures only reach their own tree).
from tests.integration.conftest import (
    ROOT,
    ProxyFactory,
    ProxyServer,
    proxy_factory,
    proxy_server,
)

__all__ = ["ROOT", "ProxyFactory", "ProxyServer", "proxy_factory", "proxy_server"]

BULK = "/ofrep/v1/evaluate/flags"

# Each environment's values carry its own name, so any leak is visible in a response body.
def env_doc(env: str) -> dict[str, Any]:
    return {
        "flags": {
            "secret-" + env: {"state": "ENABLED", "variants": {"v": f"only-in-{env}"},
                              "defaultVariant": "v"},
            "shared": {"state": "ENABLED", "variants": {"a": f"{env}-a", "b": f"{env}-b"},
                       "defaultVariant": "a",
                       "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "b", None]}},
        },
        "metadata": {"owner": f"team-{env}"},
    }


def http(server: ProxyServer, key: str | None = None, timeout: float = 10.0) -> httpx.Client:
    """A client for ``server`` with ``key`` as Bearer (None: no auth) and a given timeout."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=timeout)


def b64_context(context: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(context)).rstrip(b"=").decode()


def ofrep_error_body(response: httpx.Response) -> dict[str, Any]:
    """The OFREP error shape every 4xx must have; returns the body."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code, response.headers, response.content[:200])
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("errorCode"), str) and body["errorCode"], body
    assert isinstance(body.get("errorDetails"), str) and body["errorDetails"], body
    return body


@dataclass
class TwoEnvs:
    server: ProxyServer
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (env, kind) -> raw key

    def key(self, env: str, kind: str) -> str:
        return self.keys[(env, kind)]


@pytest.fixture
def two_envs(proxy_factory: ProxyFactory) -> TwoEnvs:
    """One server, envs ``alpha`` and ``beta`` published, a client/server/admin key each."""
    server = proxy_factory(env="alpha")
    for env in ("alpha", "beta"):
        server.push(env_doc(env), env=env)
    setup = TwoEnvs(server)
    for env in ("alpha", "beta"):
        for kind in ("client", "server", "admin"):
            setup.keys[(env, kind)] = server.create_key(kind, env=env, wait=False)
    deadline = time.monotonic() + 10
    while not all(server.key_works(k) for k in setup.keys.values()):
        assert time.monotonic() < deadline, "keys never reached the proxy"
        time.sleep(0.05)
    return setup
