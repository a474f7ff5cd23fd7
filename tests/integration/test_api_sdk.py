"""The real OpenFeature Python SDK + OFREP provider against a real `flagedge serve` and a
real redis-server: what a backend service calling flagedge sees."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

FLAGS = {
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False},
                         "defaultVariant": "off",
                         "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]},
                                              "on", None]}},
        "greeting": {"state": "ENABLED", "variants": {"formal": "Good day", "casual": "Hey"},
                     "defaultVariant": "formal",
                     "targeting": {"if": [{"in": [{"var": "country"}, ["US", "AU"]]}, "casual",
                                          None]}},
        "max-items": {"state": "ENABLED", "variants": {"few": 3, "many": 50},
                      "defaultVariant": "few"},
        "discount": {"state": "ENABLED", "variants": {"none": 0, "some": 0.15, "big": 0.5},
                     "defaultVariant": "none",
                     "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "big", None]}},
        "ratio": {"state": "ENABLED", "variants": {"one": 1.0, "two": 2.0},
                  "defaultVariant": "two"},
        "ui-config": {"state": "ENABLED",
                      "variants": {"a": {"theme": "dark", "cols": 3}, "b": {"theme": "light"}},
                      "defaultVariant": "a"},
        "experiment": {"state": "ENABLED", "variants": {"control": "c", "treatment": "t"},
                       "defaultVariant": "control",
                       "targeting": {"fractional": [["control", 50], ["treatment", 50]]}},
        "retired": {"state": "DISABLED", "variants": {"on": True, "off": False},
                    "defaultVariant": "on"},
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyServer, str]]:
    work: Path = tmp_path_factory.mktemp("sdk")
    redis = RedisServer(work / "redis").start()
    server = ProxyServer(redis, work / "proxy", env="sdk")
    try:
        server.start()
        server.push(FLAGS)
        key = server.create_key("client")
        yield server, key
    finally:
        server.stop()
        redis.stop()


def client_for(server: ProxyServer, key: str):
    domain = f"flagedge-{uuid.uuid4().hex}"
    provider = OFREPProvider(server.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"})
    api.set_provider(provider, domain=domain)
    return api.get_client(domain)


def ctx(tk: str = "user-1", **attrs) -> EvaluationContext:
    return EvaluationContext(targeting_key=tk, attributes=attrs)


def test_every_type_through_the_sdk(served):
    server, key = served
    client = client_for(server, key)
    d = client.get_boolean_details("new-checkout", False, ctx(email="ann@example.com"))
    assert (d.value, d.variant, d.reason, d.error_code) == (True, "on", Reason.TARGETING_MATCH, None)
    d = client.get_boolean_details("new-checkout", True, ctx(email="bob@mail.test"))
    assert (d.value, d.variant, d.reason) == (False, "off", Reason.DEFAULT)
    assert client.get_string_value("greeting", "?", ctx(country="US")) == "Hey"
    assert client.get_string_value("greeting", "?", ctx(country="DE")) == "Good day"
    d = client.get_integer_details("max-items", 0, ctx())
    assert (d.value, d.error_code) == (3, None) and type(d.value) is int
    d = client.get_object_details("ui-config", {}, ctx())
    assert d.value == {"theme": "dark", "cols": 3} and d.reason == Reason.STATIC


def test_float_flag_with_whole_number_variant(served):
    server, key = served
    client = client_for(server, key)
    # The default variant is 0 (written as an integer) in a flag with 0.15 and 0.5: the
    # provider's isinstance(value, float) check must pass.
    d = client.get_float_details("discount", 9.9, ctx(plan="free"))
    assert (d.value, d.error_code, d.variant) == (0.0, None, "none")
    assert type(d.value) is float
    assert client.get_float_value("discount", 9.9, ctx(plan="pro")) == 0.5
    # Whole-number variants written as floats (2.0) stay floats through Redis and the API.
    d = client.get_float_details("ratio", 0.1, ctx())
    assert (d.value, d.error_code) == (2.0, None) and type(d.value) is float


def test_fractional_is_sticky_and_splits(served):
    server, key = served
    client = client_for(server, key)
    seen = {}
    for i in range(30):
        first = client.get_string_details("experiment", "x", ctx(f"user-{i}"))
        again = client.get_string_value("experiment", "x", ctx(f"user-{i}"))
        assert first.value == again and first.reason == Reason.TARGETING_MATCH
        seen[first.value] = seen.get(first.value, 0) + 1
    assert set(seen) == {"c", "t"}


def test_disabled_missing_and_bad_key(served):
    server, key = served
    client = client_for(server, key)
    d = client.get_boolean_details("retired", False, ctx())
    assert (d.value, d.reason, d.variant, d.error_code) == (False, Reason.DISABLED, None, None)
    d = client.get_string_details("no-such-flag", "fallback", ctx())
    assert (d.value, d.error_code, d.reason) == ("fallback", ErrorCode.FLAG_NOT_FOUND, Reason.ERROR)
    bad = client_for(server, "fe_client_not-a-real-key")
    d = bad.get_boolean_details("new-checkout", True, ctx())
    assert d.value is True and d.error_code == ErrorCode.GENERAL
    assert "unauthorized" in (d.error_message or "")
    # Wrong type asked by the caller: the provider reports TYPE_MISMATCH, the default is used.
    d = client.get_integer_details("greeting", 7, ctx())
    assert (d.value, d.error_code) == (7, ErrorCode.TYPE_MISMATCH)
    # The server is still fine afterwards.
    assert client.get_integer_value("max-items", 0, ctx()) == 3
