"""schemathesis against the real served ``/openapi.json`` of a real `flagedge serve`
(uvicorn subprocess, real redis-server), authenticated with real keys: thousands of
generated requests (schema-conforming and deliberately invalid ones) across every documented
operation. Zero 5xx; every 4xx is JSON with the OFREP error body (``errorCode``,
``errorDetails``); responses conform to the documented schema."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.hardening.conftest import ProxyServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOC = {
    "flags": {
        "0": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
              "targeting": {"if": [{"==": [{"var": "targetingKey"}, ""]}, "on", None]}},
        "banner": {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "off",
                   "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "team"]]}, "on", None]}},
        "rollout": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a",
                    "targeting": {"fractional": [["a", 50], ["b", 50]]}},
        "price": {"state": "ENABLED", "variants": {"lo": 1.5, "hi": 9}, "defaultVariant": "lo"},
        "broken": {"state": "ENABLED", "variants": {"x": "X"}, "defaultVariant": "x",
                   "targeting": {"if": [{"var": "plan"}, "not-a-variant", "x"]}},
        "off": {"state": "DISABLED", "variants": {"x": {"k": [1]}}, "defaultVariant": "x"},
    },
    "metadata": {"team": "hardening"},
}

# What the documented responses promise (auth checks are ours: we replace the generated auth).
CONFORMANCE = [status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]

# Examples per (operation, generation mode); the stream operation reads each stream for
# a fraction of a second, so it gets fewer.
EXAMPLES = {GenerationMode.POSITIVE: 450, GenerationMode.NEGATIVE: 250}
STREAM_EXAMPLES = 30
STREAM_PATHS = {"/ofrep/v1/events", "/v1/stream/evaluated", "/v1/stream/rules",
                "/v1/admin/insights/live"}
PLAIN_GET_EXAMPLES = 120
# Release control (DESIGN §10): 23 operations, each a Redis round trip or a script (a preview
# evaluates 10,000 contexts): fewer examples each, so the budget reaches every operation.
RELEASE_PATHS = ("/v1/admin/envs", "/v1/admin/keys")
RELEASE_EXAMPLES = 25
BUDGET_S = 240.0  # the whole run, on 2 shared cores


def header(response: Any, name: str) -> str:
    """schemathesis' Response keeps headers as name -> list of values."""
    for k, v in response.headers.items():
        if k.lower() == name:
            return v[0] if isinstance(v, list) else v
    return ""


def check_response(case: Any, response: Any, failures: list[str]) -> None:
    where = f"{case.method} {case.path} -> {response.status_code}"
    if response.status_code >= 500:
        failures.append(f"{where}: 5xx: {response.content[:300]!r}\n{case.as_curl_command()}")
        return
    if 400 <= response.status_code < 500:
        ctype = header(response, "content-type")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            failures.append(f"{where}: 4xx body is not JSON ({ctype}): {response.content[:200]!r}")
            return
        if not (isinstance(body, dict) and isinstance(body.get("errorCode"), str)
                and body["errorCode"] and isinstance(body.get("errorDetails"), str)):
            failures.append(f"{where}: 4xx without the OFREP error body: {body!r}")
        if not ctype.startswith("application/json"):
            failures.append(f"{where}: 4xx content type {ctype!r}")


def run_operation(op: Any, server: ProxyServer, keys: dict[str, str], mode: GenerationMode,
                  examples: int, counts: Counter[str], failures: list[str],
                  deadline: float) -> None:
    session = requests.Session()
    is_stream = op.path in STREAM_PATHS
    timeout = (5.0, 0.2) if is_stream else 10.0
    # Mostly real keys of each kind, sometimes whatever schemathesis generated (or nothing).
    auth = st.sampled_from(["admin", "admin", "server", "client", "generated"])

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode), who=auth)
    def fuzz(case: Any, who: str) -> None:
        if time.monotonic() > deadline:
            return
        headers = None
        if who != "generated":
            headers = {"Authorization": f"Bearer {keys[who]}"}
        response = case.call(base_url=server.url, session=session, headers=headers,
                             timeout=timeout)
        counts[f"{op.method.upper()} {op.path}"] += 1
        counts[str(response.status_code)] += 1
        check_response(case, response, failures)
        key = unquote(str((case.path_parameters or {}).get("key", "")))
        if "\n" in key or ".." in key.split("/"):
            # Starlette's route patterns do not match a newline, and the client resolves
            # ".." segments: such a key reaches no route, so the answer is the generic 404
            # (with the OFREP error body, checked above, but no "key").
            counts["unroutable-key"] += 1
        elif mode is GenerationMode.POSITIVE and not is_stream:
            try:
                case.validate_response(response, checks=CONFORMANCE, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # reported, not raised mid-run
                failures.append(f"{case.method} {case.path} {case.path_parameters} -> "
                                f"{response.status_code} {response.content[:200]!r}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}")

    try:
        fuzz()
    except Unsatisfiable:  # e.g. no way to make an operation without parameters invalid
        pass
    finally:
        session.close()


def examples(op: Any, n: int) -> int:
    if op.path in STREAM_PATHS:
        return STREAM_EXAMPLES
    if op.path.startswith(RELEASE_PATHS):
        return RELEASE_EXAMPLES
    if op.method.upper() == "GET":  # no body and few parameters: little to vary
        return PLAIN_GET_EXAMPLES
    return n


def test_generated_requests_never_5xx_and_4xx_have_ofrep_bodies(proxy_factory) -> None:
    server = proxy_factory(env="test")
    server.push(DOC)
    keys = {kind: server.create_key(kind, name=f"schemathesis-{kind}")
            for kind in ("client", "server", "admin")}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /ofrep/v1/evaluate/flags/{key}", "POST /ofrep/v1/evaluate/flags",
            "GET /ofrep/v1/events", "POST /v1/explain/{key}", "GET /v1/rules",
            "GET /v1/stream/evaluated", "GET /v1/stream/rules", "GET /v1/envs",
            "PUT /v1/admin/envs/{env}/document", "POST /v1/admin/envs/{env}/requests",
            "PATCH /v1/admin/envs/{env}/flags/{key}", "POST /v1/admin/keys"} <= documented

    counts: Counter[str] = Counter()
    failures: list[str] = []
    start = time.monotonic()
    deadline = start + BUDGET_S
    runs = [(op, mode, examples(op, n)) for op in operations for mode, n in EXAMPLES.items()]
    wanted = sum(n for _op, _mode, n in runs)
    for op, mode, n in runs:
        # Each run gets its share of the time left, by its examples (at least half a second:
        # one example), so a slow machine thins every operation out instead of never reaching
        # the last ones; a run done early leaves its time to the others.
        share = max(0.5, (deadline - time.monotonic()) * n / wanted)
        wanted -= n
        run_operation(op, server, keys, mode, n, counts, failures, time.monotonic() + share)
    took = time.monotonic() - start

    total = sum(v for k, v in counts.items() if " " in k)
    per_op = {k: v for k, v in counts.items() if " " in k}
    statuses = {k: v for k, v in counts.items() if k.isdigit()}
    print(f"\nschemathesis: {total} requests in {took:.1f}s; per operation {per_op}; "
          f"statuses {statuses}; unroutable keys {counts['unroutable-key']}")
    distinct = sorted({f.split(":", 1)[0] + ":" + f.split("->", 1)[-1][:160] for f in failures})
    assert not failures, f"{len(failures)} failures, e.g.:\n" + "\n\n".join(distinct[:12])
    assert total >= 2_000, (total, per_op)
    assert set(per_op) == documented  # every operation was exercised
    assert statuses.get("200", 0) >= 500 and any(s.startswith("4") for s in statuses)
    # The server is still fine afterwards.
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
