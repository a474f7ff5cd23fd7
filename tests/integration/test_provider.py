"""The in-process provider against a real `flagedge serve` (uvicorn subprocess, real Redis):
parity with the server's OFREP answers, pushes as CONFIGURATION_CHANGED, restarts survived.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.provider import ProviderStatus

from proxy.provider import FlagedgeProvider
from tests.integration.conftest import ProxyFactory, ProxyServer
from tests.redis_server import wait_until
from tests.tcp import pipe

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLAGS: dict[str, Any] = orjson.loads((ROOT / "config" / "flags.json").read_bytes())
EVENTS = list(ProviderEvent)
N_CONTEXTS = 3000


class Events:
    """Every provider event a client saw, in order, with waits that have deadlines."""

    def __init__(self, client: OpenFeatureClient):
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._cond = threading.Condition()
        for event in EVENTS:
            client.add_handler(event, self._handler(event))

    def _handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self._cond:
                self.seen.append((event, details))
                self._cond.notify_all()
        return handle

    def mark(self) -> int:
        with self._cond:
            return len(self.seen)

    def wait(self, event: ProviderEvent, after: int = 0, timeout: float = 10.0,
             where: Callable[[EventDetails], bool] = lambda d: True) -> EventDetails:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev, details in self.seen[after:]:
                    if ev == event and where(details):
                        return details
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event.value} within {timeout}s; saw "
                                       f"{[e.value for e, _ in self.seen[after:]]}")
                self._cond.wait(left)

    def kinds(self, after: int = 0) -> list[ProviderEvent]:
        with self._cond:
            return [e for e, _ in self.seen[after:]]


@pytest.fixture
def openfeature_api() -> Iterator[None]:
    yield
    api.shutdown()  # shuts every provider down and drops the handlers


def make_provider(server: ProxyServer, key: str, **kwargs: Any) -> FlagedgeProvider:
    options: dict[str, Any] = {"init_timeout": 10.0, "backoff_initial": 0.05,
                               "backoff_max": 0.5}
    options.update(kwargs)
    return FlagedgeProvider(server.url, key, **options)


def connect(provider: FlagedgeProvider, domain: str) -> tuple[OpenFeatureClient, Events]:
    api.set_provider_and_wait(provider, domain=domain)
    client = api.get_client(domain)
    events = Events(client)
    # The SDK replays the current status (READY) to a new handler, asynchronously: let it
    # land now so it is never taken for a later READY.
    events.wait(ProviderEvent.PROVIDER_READY)
    return client, events


@pytest.fixture
def served(proxy_server: ProxyServer, openfeature_api: None
           ) -> tuple[ProxyServer, str, FlagedgeProvider, OpenFeatureClient, Events]:
    proxy_server.push(FLAGS, wait=False)
    key = proxy_server.create_key("server")
    provider = make_provider(proxy_server, key)
    client, events = connect(provider, "flagedge-provider-test")
    assert client.get_provider_status() == ProviderStatus.READY
    return proxy_server, key, provider, client, events


# -- parity with the server's OFREP answers ---------------------------------------------------
def random_context(rng: random.Random) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    tk = rng.random()
    if tk < 0.85:
        ctx["targetingKey"] = f"user-{rng.randrange(100_000)}"
    elif tk < 0.9:
        ctx["targetingKey"] = rng.choice(["", "qa-robot-1", "qa-robot-2", "ünïcode-ß"])
    pick: dict[str, Callable[[], Any]] = {
        "email": lambda: rng.choice(["a@flagedge.dev", "b@example.com", "x@FLAGEDGE.DEV",
                                     "flagedge.dev", ""]),
        "ring": lambda: rng.choice(["canary", "stable", "Canary"]),
        "platform": lambda: rng.choice(["ios", "android", "web", "IOS"]),
        "appVersion": lambda: rng.choice(["4.2.0", "4.1.9", "v4.2", "5", "4.2.0-beta.1",
                                          "not-a-version", "10.0.0", "4.10.1"]),
        "country": lambda: rng.choice(["DE", "CH", "NO", "US", "de", ""]),
        "locale": lambda: rng.choice(["en-US", "en", "de-DE", "fr", "EN-gb"]),
        "loggedIn": lambda: rng.choice([True, False, 0, 1, "yes", ""]),
    }
    for name, gen in pick.items():
        if rng.random() < 0.6:
            ctx[name] = gen()
    return ctx


def detail_kind(raw_flag: dict[str, Any]) -> str:
    sample = next(iter(raw_flag["variants"].values()))
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, str):
        return "string"
    if isinstance(sample, int | float):
        return "float"
    return "object"


DEFAULTS = {"boolean": False, "string": "<default>", "float": -1.5, "object": {"d": 1}}


class Outcomes:
    def __init__(self) -> None:
        self.compared = 0
        self.reasons: set[str] = set()
        self.variants: set[tuple[str, str | None]] = set()
        self.errors: set[tuple[str, str]] = set()


def compare_with_ofrep(server: ProxyServer, key: str, client: OpenFeatureClient,
                       doc: dict[str, Any], contexts: list[dict[str, Any]]) -> Outcomes:
    """For every context: the server's bulk OFREP answer vs. the provider's typed details
    for every flag (value, variant, reason, metadata, error code)."""
    kinds = {k: detail_kind(f) for k, f in doc["flags"].items()}
    out = Outcomes()
    with server.client(key) as http:
        for ctx in contexts:
            r = http.post("/ofrep/v1/evaluate/flags", json={"context": ctx})
            assert r.status_code == 200, r.text
            items = r.json()["flags"]
            assert {i["key"] for i in items} == set(doc["flags"])
            attrs = {k: v for k, v in ctx.items() if k != "targetingKey"}
            of_ctx = EvaluationContext(targeting_key=ctx.get("targetingKey"), attributes=attrs)
            if ctx.get("targetingKey") == "":
                # OpenFeature drops an empty targeting key; send it as an attribute instead,
                # exactly as the OFREP provider would put it in the request.
                of_ctx = EvaluationContext(attributes={**attrs, "targetingKey": ""})
            for item in items:
                kind = kinds[item["key"]]
                getter = getattr(client, f"get_{kind}_details")
                got = getter(item["key"], DEFAULTS[kind], of_ctx)
                where = f"{item['key']} for {ctx}"
                if "errorCode" in item:
                    assert got.error_code == item["errorCode"], where
                    assert got.value == DEFAULTS[kind] and got.reason == "ERROR", where
                    out.errors.add((item["key"], item["errorCode"]))
                    continue
                assert got.error_code is None, (where, got.error_message)
                assert got.reason == item["reason"], where
                assert got.variant == item["variant"], where
                assert got.value == item.get("value", DEFAULTS[kind]), where
                assert dict(got.flag_metadata) == item["metadata"], where
                out.reasons.add(item["reason"])
                out.variants.add((item["key"], item["variant"]))
                out.compared += 1
    return out


def test_values_match_the_servers_ofrep_answers(served: Any) -> None:
    server, key, _provider, client, _events = served
    rng = random.Random(20261125)
    contexts = [random_context(rng) for _ in range(N_CONTEXTS)]
    out = compare_with_ofrep(server, key, client, FLAGS, contexts)
    assert out.compared == N_CONTEXTS * len(FLAGS["flags"])  # the demo flags never error
    # the sample exercised every outcome the demo flags can have
    assert out.reasons == {"STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED"}
    for flag_key, raw in FLAGS["flags"].items():
        if raw["state"] == "ENABLED" and raw.get("targeting"):
            assert {v for k, v in out.variants if k == flag_key} == set(raw["variants"]), flag_key


EDGE_DOC: dict[str, Any] = {
    "metadata": {"flagSetId": "edge", "rev": 7, "beta": True},
    "$evaluators": {"adult": {">=": [{"var": "age"}, 18]}},
    "flags": {
        "whole-floats": {"state": "ENABLED", "variants": {"a": 3.0, "b": 1e3, "c": -0.25},
                         "defaultVariant": "a",
                         "targeting": {"if": [{"$ref": "adult"}, "b",
                                              {"<": [{"var": "age"}, 0]}, "c", None]}},
        "no-default": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", None]},
                       "metadata": {"weight": 1.5, "internal": False}},
        "bool-result": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"},
                        "defaultVariant": "false",
                        "targeting": {"==": [{"var": "tier"}, "gold"]}},
        "unknown-variant": {"state": "ENABLED", "variants": {"x": 1, "y": 2},
                            "defaultVariant": "x", "targeting": {"var": "pick"}},
        "weights": {"state": "ENABLED", "variants": {"a": "A", "b": "B", "c": "C"},
                    "defaultVariant": "a",
                    "targeting": {"fractional": [{"var": "bucket"}, ["a", 1], ["b", 2],
                                                 ["c", {"+": [1, 1]}]]}},
        "versions": {"state": "ENABLED",
                     "variants": {"new": {"ui": [1, 2, {"deep": None}]}, "old": {"ui": []}},
                     "defaultVariant": "old",
                     "targeting": {"if": [{"sem_ver": [{"var": "v"}, "^", "2.1.0"]}, "new",
                                          None]}},
        "flag-key": {"state": "ENABLED", "variants": {"k": "flag-key", "other": "?"},
                     "defaultVariant": "other",
                     "targeting": {"if": [{"==": [{"var": "$flagd.flagKey"}, "flag-key"]},
                                          "k", None]}},
        "before-2100": {"state": "ENABLED", "variants": {"yes": True, "no": False},
                        "defaultVariant": "no",
                        "targeting": {"if": [{"<": [{"var": "$flagd.timestamp"}, 4102444800]},
                                             "yes", None]}},
        "off": {"state": "DISABLED", "variants": {"s": "s"}, "defaultVariant": "s"},
    },
}


def edge_context(rng: random.Random) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if rng.random() < 0.8:
        ctx["targetingKey"] = f"k{rng.randrange(10_000)}"
    options: dict[str, list[Any]] = {
        "age": [17, 18, 40, -1, "19", None, 17.5],
        "tier": ["gold", "silver", None, 1],
        "pick": ["x", "y", "z", None, 3],
        "bucket": ["u1", "u2", "u3", "ü", "", 42],
        "v": ["2.1.0", "2.9.9", "3.0.0", "v2.1", "2", "2.0.9", "bad", None],
    }
    for name, values in options.items():
        if rng.random() < 0.7:
            ctx[name] = rng.choice(values)
    return ctx


def test_edge_rules_match_the_servers_ofrep_answers_including_errors(
        proxy_server: ProxyServer, openfeature_api: None) -> None:
    proxy_server.push(EDGE_DOC, wait=False)
    key = proxy_server.create_key("server")
    client, _events = connect(make_provider(proxy_server, key), "flagedge-provider-edge")
    rng = random.Random(7)
    out = compare_with_ofrep(proxy_server, key, client, EDGE_DOC,
                             [edge_context(rng) for _ in range(1000)])
    assert out.compared > 1000 * 7
    assert ("unknown-variant", "GENERAL") in out.errors  # targeting named no variant
    assert ("no-default", None) in out.variants  # DEFAULT without a default variant
    assert {("whole-floats", v) for v in "abc"} <= out.variants
    assert {("weights", v) for v in "abc"} <= out.variants
    assert {("bool-result", "true"), ("bool-result", "false"), ("flag-key", "k"),
            ("before-2100", "yes"), ("versions", "new"), ("versions", "old")} <= out.variants


def test_evaluation_costs_no_network_round_trip(served: Any) -> None:
    """Evaluations keep answering, with the same values, while the server is gone."""
    server, _key, _provider, client, events = served
    ctx = EvaluationContext(targeting_key="user-7", attributes={"country": "DE"})
    before = [client.get_float_details("free-shipping-threshold", 0.0, ctx) for _ in range(3)]
    mark = events.mark()
    server.kill()
    events.wait(ProviderEvent.PROVIDER_STALE, mark)
    after = client.get_float_details("free-shipping-threshold", 0.0, ctx)
    assert (after.value, after.variant, after.reason) == (
        before[0].value, before[0].variant, before[0].reason) == (25, "low", "TARGETING_MATCH")


# -- pushes --------------------------------------------------------------------------------
def changed_doc() -> dict[str, Any]:
    doc = orjson.loads(orjson.dumps(FLAGS))
    doc["flags"]["welcome-banner"]["defaultVariant"] = "holiday"
    del doc["flags"]["legacy-search"]
    return doc


def test_push_arrives_as_configuration_changed_with_the_keys(served: Any) -> None:
    server, _key, _provider, client, events = served
    ctx = EvaluationContext(targeting_key="u1", attributes={"loggedIn": True})
    assert client.get_string_value("welcome-banner", "", ctx) == "Welcome back"
    mark = events.mark()
    version = server.push(changed_doc(), wait=False)
    # one version deleting one flag and changing another: one event naming both
    details = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
    assert sorted(details.flags_changed or []) == ["legacy-search", "welcome-banner"]
    assert details.metadata.get("version") == version
    assert client.get_string_value("welcome-banner", "", ctx) == "Happy holidays!"
    gone = client.get_boolean_details("legacy-search", True, ctx)
    assert gone.error_code == ErrorCode.FLAG_NOT_FOUND and gone.value is True


def test_evaluator_change_names_every_flag_that_uses_it(served: Any) -> None:
    server, _key, _provider, client, events = served
    doc = orjson.loads(orjson.dumps(FLAGS))
    doc["$evaluators"]["internal-users"] = {"ends_with": [{"var": "email"}, "@corp.example"]}
    ctx = EvaluationContext(targeting_key="u1", attributes={"email": "ann@corp.example"})
    before = client.get_object_details("checkout-config", {}, ctx)
    assert (before.variant, before.reason) == ("standard", "DEFAULT")
    mark = events.mark()
    server.push(doc, wait=False)
    details = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
    # search-ranking uses it directly; new-checkout and checkout-config through "canary"
    assert sorted(details.flags_changed or []) == [
        "checkout-config", "new-checkout", "search-ranking"]
    after = client.get_object_details("checkout-config", {}, ctx)
    assert (after.variant, after.reason) == ("canary", "TARGETING_MATCH")
    assert after.value["maxItems"] == 100
    assert client.get_string_value("search-ranking", "", ctx) == "bm25+embeddings-v2"
    assert client.get_boolean_value("new-checkout", False, ctx) is True


def test_many_pushes_in_a_row_end_in_the_servers_state(served: Any) -> None:
    server, key, _provider, client, events = served
    doc = orjson.loads(orjson.dumps(FLAGS))
    flag = doc["flags"]["free-shipping-threshold"]
    last = 0
    for i in range(20):
        flag["variants"]["default"] = 100 + i
        last = server.push(doc, wait=False)
    events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                where=lambda d: d.metadata.get("version") == last)
    assert client.get_float_value("free-shipping-threshold", 0.0) == 119
    with server.client(key) as http:
        body = http.post("/ofrep/v1/evaluate/flags/free-shipping-threshold",
                         json={"context": {}}).json()
    assert body["value"] == 119


# -- outages -------------------------------------------------------------------------------
def test_server_restart_is_survived_and_missed_changes_replayed(served: Any) -> None:
    server, _key, provider, client, events = served
    ctx = EvaluationContext(targeting_key="u1", attributes={"loggedIn": True})
    mark = events.mark()
    server.stop()  # graceful: the server closes the stream
    events.wait(ProviderEvent.PROVIDER_STALE, mark)
    assert provider.status == ProviderStatus.STALE
    assert client.get_provider_status() == ProviderStatus.STALE
    assert client.get_string_value("welcome-banner", "", ctx) == "Welcome back"  # last rules

    missed = server.push(changed_doc(), wait=False)  # written while the proxy is down
    mark = events.mark()
    server.start()
    events.wait(ProviderEvent.PROVIDER_READY, mark)
    changed = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
    assert sorted(changed.flags_changed or []) == ["legacy-search", "welcome-banner"]
    assert changed.metadata.get("version") == missed
    assert client.get_string_value("welcome-banner", "", ctx) == "Happy holidays!"
    assert client.get_provider_status() == ProviderStatus.READY

    mark = events.mark()
    doc = changed_doc()
    doc["flags"]["welcome-banner"]["defaultVariant"] = "none"
    after = server.push(doc, wait=False)
    changed = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
    assert changed.flags_changed == ["welcome-banner"] and changed.metadata["version"] == after
    assert client.get_string_value("welcome-banner", "x", ctx) == ""


class Cuttable:
    """A TCP forwarder between the provider and the server that can drop every connection
    and refuse new ones, while the server itself stays up (a network cut, not a restart)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.accepted = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.accepted += 1
                self._socks += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_network_cut_resumes_with_last_event_id_and_replays_only_the_missed(
        served: Any, caplog: pytest.LogCaptureFixture) -> None:
    server, key, other, _client, _events = served
    other.shutdown()  # only the provider behind the forwarder may log below
    net = Cuttable(server.port)
    try:
        provider = make_provider(server, key)
        provider._url = net.url + "/v1/stream/rules"  # same server, through the forwarder
        client, events = connect(provider, "flagedge-provider-cut")
        first_version = provider.flag_set.version if provider.flag_set else -1
        caplog.set_level(logging.INFO, logger="flagedge.provider")
        caplog.clear()
        mark = events.mark()
        net.cut()
        events.wait(ProviderEvent.PROVIDER_STALE, mark)
        v1 = server.push(changed_doc())  # server up, provider cut off: it misses these two
        doc = changed_doc()
        doc["flags"]["free-shipping-threshold"]["variants"]["default"] = 60
        v2 = server.push(doc)
        assert (v1, v2) == (first_version + 1, first_version + 2)
        mark = events.mark()
        net.restore()
        events.wait(ProviderEvent.PROVIDER_READY, mark)
        last = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark,
                           where=lambda d: d.metadata.get("version") == v2)
        changes = [d for e, d in events.seen[mark:]
                   if e == ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
        assert [d.metadata["version"] for d in changes] == [v1, v2]  # each once, in order
        assert sorted(changes[0].flags_changed or []) == ["legacy-search", "welcome-banner"]
        assert last.flags_changed == ["free-shipping-threshold"]
        applied = [r.getMessage() for r in caplog.records if "applied" in r.getMessage()]
        # replayed from the server's change log, not a fresh put of everything
        # (v1's delete comes without an id and is announced with v1's patch)
        assert applied == [f"rules patch applied: version {v1}, 2 flags changed",
                           f"rules patch applied: version {v2}, 1 flags changed"], applied
        assert client.get_float_value("free-shipping-threshold", 0.0) == 60
    finally:
        net.close()


def test_killed_server_stale_then_error_after_grace_then_ready(
        proxy_server: ProxyServer, openfeature_api: None) -> None:
    proxy_server.push(FLAGS, wait=False)
    key = proxy_server.create_key("server")
    provider = make_provider(proxy_server, key, error_grace_period=0.5)
    client, events = connect(provider, "flagedge-provider-kill")
    mark = events.mark()
    proxy_server.kill()  # SIGKILL: no goodbye, the socket just drops
    events.wait(ProviderEvent.PROVIDER_STALE, mark)
    error = events.wait(ProviderEvent.PROVIDER_ERROR, mark)
    assert error.error_code == ErrorCode.GENERAL
    assert client.get_provider_status() == ProviderStatus.ERROR
    still = client.get_boolean_details("payments-kill-switch", False)
    assert (still.value, still.reason) == (True, "STATIC")  # last rules still served
    mark = events.mark()
    proxy_server.start()
    events.wait(ProviderEvent.PROVIDER_READY, mark)
    assert events.kinds(mark)[0] == ProviderEvent.PROVIDER_READY
    assert client.get_provider_status() == ProviderStatus.READY


def test_hung_server_is_detected_by_the_read_timeout(
        proxy_server: ProxyServer, openfeature_api: None) -> None:
    """A server that stops answering without closing the socket (SIGSTOP: frozen process,
    connection open) is noticed when nothing, not even a heartbeat, arrives in time."""
    proxy_server.push(FLAGS, wait=False)
    key = proxy_server.create_key("server")
    provider = make_provider(proxy_server, key, read_timeout=1.0)
    client, events = connect(provider, "flagedge-provider-hung")
    assert proxy_server.proc is not None
    mark = events.mark()
    proxy_server.proc.send_signal(signal.SIGSTOP)
    try:
        events.wait(ProviderEvent.PROVIDER_STALE, mark, timeout=10)
        assert client.get_boolean_value("payments-kill-switch", False) is True
    finally:
        proxy_server.proc.send_signal(signal.SIGCONT)
    events.wait(ProviderEvent.PROVIDER_READY, mark, timeout=10)
    kinds = events.kinds(mark)
    assert kinds.index(ProviderEvent.PROVIDER_STALE) < kinds.index(ProviderEvent.PROVIDER_READY)
    # (no status check after this: a 1 s read timeout is shorter than the server's 15 s
    # heartbeat, so this provider drops every quiet connection; real ones use 45 s)


def test_provider_started_before_the_server_becomes_ready_later(
        proxy_factory: ProxyFactory, openfeature_api: None) -> None:
    server = proxy_factory(start=False)
    server.push(FLAGS, wait=False)  # rules and key exist; the proxy is not up yet
    key = server.create_key("server", wait=False)
    provider = make_provider(server, key, init_timeout=0.5)
    with pytest.raises(Exception, match="no rules"):
        api.set_provider_and_wait(provider, domain="flagedge-provider-late")
    client = api.get_client("flagedge-provider-late")
    assert client.get_provider_status() == ProviderStatus.ERROR
    early = client.get_boolean_details("payments-kill-switch", False)
    assert early.error_code == ErrorCode.PROVIDER_NOT_READY and early.value is False

    events = Events(client)
    mark = events.mark()
    server.start()
    events.wait(ProviderEvent.PROVIDER_READY, mark, timeout=15)
    assert client.get_provider_status() == ProviderStatus.READY
    assert client.get_boolean_value("payments-kill-switch", False) is True


def test_unknown_key_is_fatal_at_startup(proxy_server: ProxyServer, openfeature_api: None
                                         ) -> None:
    proxy_server.push(FLAGS, wait=False)
    provider = make_provider(proxy_server, "srv_wrong")
    with pytest.raises(ProviderFatalError):
        api.set_provider_and_wait(provider, domain="flagedge-provider-badkey")
    client = api.get_client("flagedge-provider-badkey")
    assert client.get_provider_status() == ProviderStatus.FATAL
    assert provider._thread is not None
    wait_until(lambda: not provider._thread.is_alive(), timeout=5, what="stream thread to end")


def test_client_key_may_not_read_rules(proxy_server: ProxyServer, openfeature_api: None
                                       ) -> None:
    proxy_server.push(FLAGS, wait=False)
    key = proxy_server.create_key("client")
    with pytest.raises(ProviderFatalError, match="403"):
        api.set_provider_and_wait(make_provider(proxy_server, key),
                                  domain="flagedge-provider-client-key")


def test_revoked_key_keeps_the_last_rules_with_an_error(served: Any) -> None:
    server, key, _provider, client, events = served
    mark = events.mark()
    server.revoke_key(key)
    events.wait(ProviderEvent.PROVIDER_STALE, mark)  # the server closes the stream
    error = events.wait(ProviderEvent.PROVIDER_ERROR, mark)  # and refuses the reconnect
    assert "401" in (error.message or "") or "403" in (error.message or "")
    assert client.get_boolean_value("payments-kill-switch", False) is True


def test_shutdown_closes_the_stream(served: Any) -> None:
    server, _key, provider, _client, _events = served
    thread = provider._thread
    assert thread is not None and thread.is_alive()
    assert rules_streams(server) == 1
    provider.shutdown()
    assert not thread.is_alive()
    assert provider.status == ProviderStatus.NOT_READY and provider.flag_set is None
    wait_until(lambda: rules_streams(server) == 0, timeout=5, what="server to see the close")


class StallOnApply(logging.Handler):
    """Holds one thread inside its "rules ... applied" log line until released: a stalled
    log sink, the way a stream thread can be busy when shutdown() stops waiting for it."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__(logging.INFO)
        self.thread = thread
        self.stalled, self.go_on = threading.Event(), threading.Event()

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: others log on
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if (threading.current_thread() is self.thread and not self.stalled.is_set()
                and record.getMessage().startswith("rules ")
                and " applied: version " in record.getMessage()):
            self.stalled.set()
            self.go_on.wait(30)


def test_a_shutdown_that_times_out_leaves_the_old_thread_changing_nothing(
        proxy_server: ProxyServer, openfeature_api: None) -> None:
    server = proxy_server
    server.push(FLAGS, wait=False)
    provider = make_provider(server, server.create_key("server"), shutdown_timeout=0.3)
    _client, events = connect(provider, "flagedge-provider-restart")
    old = provider._thread
    assert old is not None
    stall = StallOnApply(old)
    logger = logging.getLogger("flagedge.provider")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(stall)
    try:
        v2 = server.push(changed_doc(), wait=False)
        assert stall.stalled.wait(10), "the stream thread never applied the push"
        # applied into the old run, not yet announced: the thread is stuck in its log line
        provider.shutdown()  # gives up on the thread after 0.3 s
        assert old.is_alive()
        provider.initialize(EvaluationContext())  # a new start gets the current rules, v2
        new = provider._thread
        assert new is not None and new is not old
        assert provider.flag_set is not None and provider.flag_set.version == v2
        mark = events.mark()
        stall.go_on.set()  # the old thread goes on with what it was doing
        wait_until(lambda: not old.is_alive(), timeout=10, what="the old stream thread to end")
        wait_until(lambda: rules_streams(server) == 1, timeout=5,
                   what="the old thread's stream to close")
        v3_doc = changed_doc()
        v3_doc["flags"]["welcome-banner"]["defaultVariant"] = "none"
        v3 = server.push(v3_doc, wait=False)
        details = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark,
                              where=lambda d: d.metadata.get("version") == v3)
        assert details.flags_changed == ["welcome-banner"]
        assert new.is_alive() and provider.status == ProviderStatus.READY
        # the old thread announced neither its v2 patch nor anything else after shutdown
        changes = [d.metadata.get("version") for e, d in events.seen[mark:]
                   if e == ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
        assert changes == [v3]
        assert events.kinds(mark) == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
    finally:
        stall.go_on.set()
        logger.removeHandler(stall)
        logger.setLevel(level)


def rules_streams(server: ProxyServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=2.0).text
    for line in text.splitlines():
        if line.startswith('flagedge_sse_connections{') and 'stream="rules"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
