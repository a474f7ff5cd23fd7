"""The provider's evaluation mapping and event logic, fed rules-stream events directly (no
network): engine results -> FlagResolutionDetails, type checks, and which OpenFeature events
each stream transition emits."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError
from openfeature.provider import ProviderStatus

from proxy.provider import FlagedgeProvider
from proxy.provider.inprocess import RETRY_AFTER_MAX, _retry_after, to_context
from tests.redis_server import wait_until

DOC = {
    "flags": {
        "bool": {"state": "ENABLED", "variants": {"on": True, "off": False},
                 "defaultVariant": "off",
                 "targeting": {"if": [{"==": [{"var": "email"}, "a@x.io"]}, "on", None]}},
        "str": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
                "defaultVariant": "red", "metadata": {"owner": "web"}},
        "int": {"state": "ENABLED", "variants": {"few": 3, "many": 300.0},
                "defaultVariant": "many"},
        "float": {"state": "ENABLED", "variants": {"half": 0.5, "one": 1},
                  "defaultVariant": "one"},
        "obj": {"state": "ENABLED", "variants": {"a": {"x": 1}, "b": {"x": 2}},
                "defaultVariant": "a"},
        "off": {"state": "DISABLED", "variants": {"on": True, "off": False},
                "defaultVariant": "on"},
        "nodefault": {"state": "ENABLED", "variants": {"on": True, "off": False},
                      "defaultVariant": None},
        "bad-target": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "off", "targeting": {"var": "pick"}},
    },
    "metadata": {"env": "test"},
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, ProviderEventDetails]] = []

    def __call__(self, provider: Any, event: ProviderEvent, details: ProviderEventDetails
                 ) -> None:
        self.events.append((event, details))

    def kinds(self) -> list[ProviderEvent]:
        return [e for e, _ in self.events]


def put_event(doc: dict[str, Any], version: int) -> tuple[str, str, str]:
    return "put", orjson.dumps({"version": version, "epoch": "e", "document": doc}).decode(), str(
        version)


@pytest.fixture
def provider() -> FlagedgeProvider:
    """A provider that has received its first put and returned from initialize (as if)."""
    p = FlagedgeProvider("http://127.0.0.1:9", "srv_test")
    p._on_rules_event(p._run, *put_event(DOC, 1))
    p._init_returned = True
    p._status = ProviderStatus.READY
    return p


def ctx(key: str | None = None, **attrs: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attrs)


def test_boolean_targeting_match_and_default(provider: FlagedgeProvider) -> None:
    hit = provider.resolve_boolean_details("bool", False, ctx("u", email="a@x.io"))
    assert (hit.value, hit.variant, hit.reason, hit.error_code) == (
        True, "on", "TARGETING_MATCH", None)
    miss = provider.resolve_boolean_details("bool", True, ctx("u", email="b@x.io"))
    assert (miss.value, miss.variant, miss.reason) == (False, "off", "DEFAULT")
    assert miss.flag_metadata == {"env": "test"}


def test_string_static_with_merged_metadata(provider: FlagedgeProvider) -> None:
    d = provider.resolve_string_details("str", "x", None)
    assert (d.value, d.variant, d.reason) == ("red", "red", "STATIC")
    assert d.flag_metadata == {"env": "test", "owner": "web"}


def test_numbers(provider: FlagedgeProvider) -> None:
    i = provider.resolve_integer_details("int", 0)
    assert i.value == 300 and type(i.value) is int  # JSON 300.0 is the integer 300
    f = provider.resolve_float_details("float", 0.0)
    assert f.value == 1.0 and type(f.value) is float  # the SDK checks isinstance(v, float)
    half = provider.resolve_integer_details("float", 7, None)
    assert half.value == 1  # default variant "one" = 1
    assert provider.resolve_object_details("obj", {}).value == {"x": 1}


def test_integer_request_for_a_fractional_number_is_a_type_mismatch() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k")
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"h": 0.5}, "defaultVariant": "h"}}}
    p._on_rules_event(p._run, *put_event(doc, 1))
    d = p.resolve_integer_details("f", 4)
    assert (d.value, d.error_code, d.reason) == (4, ErrorCode.TYPE_MISMATCH, "ERROR")
    assert p.resolve_float_details("f", 1.0).value == 0.5


@pytest.mark.parametrize(("method", "key", "default"), [
    ("resolve_string_details", "bool", "d"),
    ("resolve_boolean_details", "str", False),
    ("resolve_integer_details", "obj", 1),
    ("resolve_object_details", "int", {}),
    ("resolve_float_details", "bool", 1.5),
    ("resolve_string_details", "off", "d"),  # no value, but the flag's type is known
])
def test_type_mismatch(provider: FlagedgeProvider, method: str, key: str, default: Any) -> None:
    d = getattr(provider, method)(key, default, None)
    assert d.error_code == ErrorCode.TYPE_MISMATCH and d.value == default and d.reason == "ERROR"


def test_disabled_and_missing_default_give_the_callers_default(provider: FlagedgeProvider
                                                               ) -> None:
    off = provider.resolve_boolean_details("off", False)
    assert (off.value, off.variant, off.reason, off.error_code) == (False, None, "DISABLED", None)
    nd = provider.resolve_boolean_details("nodefault", True)
    assert (nd.value, nd.variant, nd.reason, nd.error_code) == (True, None, "DEFAULT", None)


def test_engine_errors_map_to_openfeature_codes(provider: FlagedgeProvider) -> None:
    missing = provider.resolve_boolean_details("nope", True)
    assert (missing.value, missing.error_code, missing.reason) == (
        True, ErrorCode.FLAG_NOT_FOUND, "ERROR")
    general = provider.resolve_boolean_details("bad-target", True, ctx("u", pick="purple"))
    assert (general.value, general.error_code) == (True, ErrorCode.GENERAL)
    bad_ctx = provider.resolve_boolean_details("bool", True, ctx(None, targetingKey=5))
    assert bad_ctx.error_code == ErrorCode.INVALID_CONTEXT


def test_not_ready_before_rules() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k")
    d = p.resolve_boolean_details("bool", True)
    assert (d.value, d.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)


def test_to_context() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = to_context(ctx("u1", age=3, at=when, nested={"at": [when]}))
    assert out == {"targetingKey": "u1", "age": 3, "at": when.isoformat(),
                   "nested": {"at": [when.isoformat()]}}
    assert to_context(None) == {} and to_context(ctx()) == {}


# -- events ----------------------------------------------------------------------------------
def test_first_put_during_initialize_emits_nothing_sdk_sends_ready() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k")
    rec = Recorder()
    p.attach(rec)
    p._on_rules_event(p._run, *put_event(DOC, 1))
    assert rec.events == []
    assert p._first_rules.is_set()


def test_first_put_after_a_timed_out_initialize_emits_ready() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k")
    rec = Recorder()
    p.attach(rec)
    p._init_returned, p._status = True, ProviderStatus.ERROR
    p._on_rules_event(p._run, *put_event(DOC, 1))
    assert rec.kinds() == [ProviderEvent.PROVIDER_READY]
    assert p.status == ProviderStatus.READY


def test_patch_emits_configuration_changed_with_keys(provider: FlagedgeProvider) -> None:
    rec = Recorder()
    provider.attach(rec)
    new_str = {**DOC["flags"]["str"], "defaultVariant": "blue"}
    provider._on_rules_event(provider._run, "patch", orjson.dumps({"version": 2, "flags": {"str": new_str}})
                             .decode(), "2")
    provider._on_rules_event(provider._run, "delete", orjson.dumps({"version": 3, "flags": ["obj"]}).decode(),
                             "3")
    assert rec.kinds() == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED] * 2
    assert [d.flags_changed for _, d in rec.events] == [["str"], ["obj"]]
    assert rec.events[0][1].metadata == {"version": 2}
    assert provider.resolve_string_details("str", "x").value == "blue"


def test_disconnect_is_stale_then_error_after_grace_then_ready_on_reconnect(
        provider: FlagedgeProvider) -> None:
    rec = Recorder()
    provider.attach(rec)
    provider._error_grace_period = 5
    provider._on_disconnected(provider._run, "connection reset", 0.0)
    provider._on_disconnected(provider._run, "connection refused", 1.0)  # still within the grace period
    assert rec.kinds() == [ProviderEvent.PROVIDER_STALE]
    # the last rules are still served while stale
    assert provider.resolve_string_details("str", "x").value == "red"
    provider._on_disconnected(provider._run, "connection refused", 6.0)
    assert rec.kinds()[-1] == ProviderEvent.PROVIDER_ERROR
    assert rec.events[-1][1].error_code == ErrorCode.GENERAL
    provider._on_connected(provider._run, )
    assert rec.kinds()[-1] == ProviderEvent.PROVIDER_READY
    assert provider.status == ProviderStatus.READY
    provider._on_connected(provider._run, )  # already ready: nothing more
    assert len(rec.events) == 3


def test_unauthorized_before_rules_is_fatal_and_stops() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k")
    assert p._on_unauthorized(p._run, "401 from ...") is True
    assert p._first_rules.is_set() and p._fatal


def test_unauthorized_after_rules_keeps_serving(provider: FlagedgeProvider) -> None:
    rec = Recorder()
    provider.attach(rec)
    assert provider._on_unauthorized(provider._run, "403 from ...") is False
    assert rec.kinds() == [ProviderEvent.PROVIDER_ERROR]
    assert provider.resolve_string_details("str", "x").value == "red"


def test_backoff_is_capped_and_jittered() -> None:
    p = FlagedgeProvider("http://127.0.0.1:9", "k", backoff_initial=0.5, backoff_max=8)
    delays = [p._backoff(a) for a in range(12) for _ in range(20)]
    assert all(0.25 <= d <= 8 for d in delays)
    assert max(p._backoff(40) for _ in range(50)) <= 8 and min(p._backoff(40) for _ in range(50)) >= 4
    assert len({round(p._backoff(3), 6) for _ in range(20)}) > 1  # jitter


@pytest.mark.parametrize(("header", "seconds"), [
    ("5", 5.0), ("0", 0.0), (None, 0.0), ("", 0.0), ("-3", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # HTTP dates: fall back to our own backoff
    ("nan", 0.0),
    # capped: a misconfigured proxy or balancer must not park the stream for a day
    ("86400", RETRY_AFTER_MAX), ("inf", RETRY_AFTER_MAX), ("1e308", RETRY_AFTER_MAX),
])
def test_retry_after(header: str | None, seconds: float) -> None:
    assert _retry_after(header) == seconds


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: connections are refused


def test_initialize_times_out_keeps_trying_and_shutdown_stops_the_thread() -> None:
    p = FlagedgeProvider(f"http://127.0.0.1:{closed_port()}", "k", init_timeout=0.2,
                         backoff_initial=0.01, backoff_max=0.05)
    started = time.monotonic()
    with pytest.raises(GeneralError, match="no rules"):
        p.initialize(EvaluationContext())
    assert 0.2 <= time.monotonic() - started < 2
    assert p.status == ProviderStatus.ERROR
    thread = p._thread
    assert thread is not None and thread.is_alive()  # still retrying in the background
    p.shutdown()
    assert not thread.is_alive() and p.status == ProviderStatus.NOT_READY


def test_shutdown_from_another_thread_releases_a_waiting_initialize() -> None:
    p = FlagedgeProvider(f"http://127.0.0.1:{closed_port()}", "k", init_timeout=30)
    errors: list[BaseException] = []

    def init() -> None:
        try:
            p.initialize(EvaluationContext())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=init)
    started = time.monotonic()
    t.start()
    wait_until(lambda: p._thread is not None, timeout=5, interval=0.001, what="initialize")
    p.shutdown()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 5
    assert len(errors) == 1 and isinstance(errors[0], GeneralError)


def test_importing_the_provider_loads_no_server_code() -> None:
    """Backend services import the provider, not the proxy: no Redis, Starlette or uvicorn."""
    code = ("import sys, proxy.provider; print(sorted({m.split('.')[0] for m in sys.modules"
            " if m.split('.')[0] in ('redis', 'starlette', 'uvicorn', 'sse_starlette',"
            " 'prometheus_client')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
