"""Every release-control route the admin API serves is in ``/openapi.json`` with its method,
and nothing is documented that is not served."""

from __future__ import annotations

import re

from proxy.api.admin_calls import AdminCalls
from proxy.api.admin_flags import FlagsApi
from proxy.api.admin_keys import KeysApi
from proxy.api.admin_release import ReleaseApi
from proxy.api.admin_requests import RequestsApi
from proxy.api.admin_rollouts import RolloutsApi
from proxy.api.admin_webhooks import WebhooksApi
from proxy.api.openapi import build_spec
from proxy.config import Settings
from proxy.keys import KeyRing


def served() -> set[str]:
    calls = AdminCalls(Settings(), None, KeyRing())  # type: ignore[arg-type]  # never called
    out = set()
    for api in (ReleaseApi, FlagsApi, RequestsApi, RolloutsApi, WebhooksApi, KeysApi):
        for route in api(calls).routes():
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {key:path} -> {key}
            out |= {f"{method} {path}" for method in route.methods or () if method != "HEAD"}
    return out


def documented() -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in build_spec()["paths"].items()
            for method in ops if path.startswith(("/v1/admin/envs", "/v1/admin/keys"))}


def test_every_release_control_route_is_documented_and_nothing_else():
    routes = served()
    assert len(routes) == 29
    assert routes == documented()


def test_write_operations_document_their_refusals():
    spec = build_spec()["paths"]
    for path, ops in spec.items():
        if not path.startswith(("/v1/admin/envs", "/v1/admin/keys")):
            continue
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "401", "403", "404"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"409", "422"} <= codes, (method, path)
