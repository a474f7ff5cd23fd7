"""Who is calling a sync RPC (DESIGN §9): selector and metadata parsing, the key's kind and
environment, the order of the places a key may be."""

from __future__ import annotations

import grpc
import pytest

from proxy.keys import KeyRecord, KeyRing, hash_key
from proxy.sync.caller import Caller, Denied, Gate, Selector, bearer, parse_selector

SERVER, CLIENT, ADMIN = "fe_server_s", "fe_client_c", "fe_admin_a"


def ring() -> KeyRing:
    keys = KeyRing()
    keys.replace_all({hash_key(k): KeyRecord.from_json(hash_key(k), {"env": "prod", "kind": kind})
                      for k, kind in ((SERVER, "server"), (CLIENT, "client"), (ADMIN, "admin"))})
    return keys


@pytest.mark.parametrize(("text", "expected"), [
    ("", Selector()),
    ("key=abc", Selector(key="abc")),
    (" env = prod , key=abc ", Selector(key="abc", env="prod")),
    ("prod", Selector(env="prod")),
    ("source=db,app=weather", Selector()),
    ("key=a=b", Selector(key="a=b")),  # only the first '=' splits
])
def test_selectors(text: str, expected: Selector) -> None:
    assert parse_selector(text) == expected


@pytest.mark.parametrize("text", ["=x", "key=", "env= "])
def test_a_malformed_selector_is_invalid_argument(text: str) -> None:
    found = parse_selector(text)
    assert isinstance(found, Denied) and found.code is grpc.StatusCode.INVALID_ARGUMENT


def test_metadata_gives_bearer_key_and_selector_header() -> None:
    assert bearer([("authorization", "Bearer  k1 "), ("flagd-selector", "env=prod"),
                   ("x-bin", b"\x00")]) == ("k1", "env=prod")
    assert bearer([]) == (None, None)
    assert isinstance(bearer([("authorization", "Basic k1")]), Denied)


def decide(gate: Gate, provider_id: str = "", selector: str = "",
           metadata: tuple[tuple[str, str], ...] = ()) -> Caller | Denied:
    return gate.decide(provider_id, selector, metadata)


def reason(found: Caller | Denied) -> str | None:
    return found.reason if isinstance(found, Denied) else None


def test_keys_kinds_and_environments() -> None:
    gate = Gate(ring())
    assert decide(gate, SERVER) == Caller("prod", "server", hash_key(SERVER)[:12])
    assert decide(gate, ADMIN).kind == "admin"
    assert reason(decide(gate)) == "no_key"
    assert reason(decide(gate, "fe_server_unknown")) == "unknown_key"
    assert reason(decide(gate, CLIENT)) == "client_key"
    assert reason(decide(gate, SERVER, "env=dev")) == "other_env"
    assert reason(decide(gate, SERVER, "dev")) == "other_env"
    assert isinstance(decide(gate, SERVER, "prod"), Caller)


def test_metadata_then_selector_then_provider_id() -> None:
    gate = Gate(ring())
    # an application name in provider_id is fine when the key is elsewhere
    assert decide(gate, "weather-app", metadata=(("authorization", f"Bearer {SERVER}"),)
                  ).kind == "server"
    assert decide(gate, "weather-app", f"key={ADMIN}").kind == "admin"
    assert reason(decide(gate, SERVER, f"key={CLIENT}")) == "client_key"
    # the header selector replaces the deprecated body field
    assert decide(gate, "", "key=nothing", (("flagd-selector", f"key={SERVER}"),)
                  ).kind == "server"


def test_keys_not_loaded_yet_are_unavailable_not_unauthenticated() -> None:
    found = decide(Gate(KeyRing()), SERVER)
    assert isinstance(found, Denied) and found.code is grpc.StatusCode.UNAVAILABLE


def test_no_auth_makes_everyone_admin_of_its_env_but_not_of_others() -> None:
    gate = Gate(KeyRing(), no_auth=True, env="dev")
    assert decide(gate) == Caller("dev", "admin", "no-auth")
    assert reason(decide(gate, "", "env=prod")) == "other_env"


def test_still_valid_follows_revocation_and_changes() -> None:
    keys = ring()
    gate = Gate(keys)
    caller = decide(gate, SERVER)
    assert isinstance(caller, Caller) and gate.still_valid(caller)
    keys.put(hash_key(SERVER), KeyRecord.from_json(hash_key(SERVER),
                                                   {"env": "dev", "kind": "server"}))
    assert not gate.still_valid(caller)
    keys.remove(hash_key(SERVER))
    assert not gate.still_valid(caller)
