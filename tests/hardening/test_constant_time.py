"""Key and token checks cannot be timed toward a match (unit tests of the pure parts).

- API keys are looked up by their sha256 digest (key ring and the authenticator's memo):
  a dict lookup on a digest reveals nothing about the secret; no raw key is stored.
- Stream-token signatures are compared with ``hmac.compare_digest``, never ``==``.
Observed by wrapping ``compare_digest``/``hash_key`` (delegating to the real functions)."""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import textwrap
import time

import pytest
from starlette.requests import Request

import proxy.api.auth as auth_module
import proxy.api.tokens as tokens_module
import proxy.keys as keys_module
from proxy.api.auth import Authenticator, Principal
from proxy.api.tokens import StreamTokens
from proxy.keys import KeyRecord, KeyRing, generate_key, hash_key


def request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/x", "headers": raw,
                    "query_string": query.encode()})


def ring_with(raw: str, env: str = "alpha", kind: str = "client") -> KeyRing:
    ring = KeyRing()
    h = hash_key(raw)
    ring.replace_all({h: KeyRecord(id=h[:12], env=env, kind=kind, name="n",
                                   created_at=time.time())})
    return ring


class Spy:
    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.real(*args)


def test_token_signatures_are_compared_with_compare_digest(monkeypatch) -> None:
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    t = StreamTokens(b"k" * 32, ttl=3600)
    good = t.issue("alpha", "client", "abcdef012345")
    assert t.verify(good) is not None
    assert len(spy.calls) == 1
    mac, expected = spy.calls[0]
    assert isinstance(mac, bytes) and len(mac) == len(expected) == 32
    payload_b64, mac_b64 = good.split(".")
    forged = f"{payload_b64}.{'A' * len(mac_b64)}"
    assert t.verify(forged) is None
    assert len(spy.calls) == 2  # the forged MAC also went through compare_digest


def test_verify_never_compares_the_mac_with_eq() -> None:
    """Source-level pin: no ``==``/``!=`` involving the MAC in StreamTokens.verify."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(StreamTokens.verify)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(o, ast.Eq | ast.NotEq)
                                                 for o in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"mac", "expected"}, ast.unparse(node)


def test_key_ring_is_keyed_by_digest_and_holds_no_raw_key(monkeypatch) -> None:
    raw = generate_key("client")
    ring = ring_with(raw)
    assert list(ring.records()) == [hashlib.sha256(raw.encode()).hexdigest()]
    assert raw not in repr(ring.records())
    hashed = Spy(keys_module.hash_key)
    monkeypatch.setattr(keys_module, "hash_key", hashed)
    assert ring.lookup(raw) is not None
    assert hashed.calls == [(raw,)]  # looked up by its digest
    assert ring.lookup(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None


@pytest.mark.parametrize("headers", [lambda k: {"Authorization": f"Bearer {k}"},
                                     lambda k: {"X-API-Key": k}])
def test_authenticator_memo_is_keyed_by_digest(monkeypatch, headers) -> None:
    raw = generate_key("server")
    auth = Authenticator(ring_with(raw, kind="server"), StreamTokens(b"s" * 32))
    hashed = Spy(auth_module.hash_key)
    monkeypatch.setattr(auth_module, "hash_key", hashed)
    for _ in range(3):
        p = auth.authorize(request(headers(raw)), "client")
        assert isinstance(p, Principal) and p.env == "alpha"
    assert len(hashed.calls) == 3 and all(c == (raw,) for c in hashed.calls)
    assert all(len(k) == 64 and k != raw for k in auth._known)
    assert raw not in repr(vars(auth))  # no raw key anywhere in the authenticator's state
    # A near miss (same length, last character changed) is a plain miss, by digest.
    near = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert auth.authorize(request(headers(near)), "client").status_code == 401


def test_stream_key_param_goes_through_the_same_digest_lookup(monkeypatch) -> None:
    raw = generate_key("client")
    auth = Authenticator(ring_with(raw), StreamTokens(b"s" * 32))
    hashed = Spy(auth_module.hash_key)
    monkeypatch.setattr(auth_module, "hash_key", hashed)
    assert isinstance(auth.authorize(request(query=f"key={raw}"), "client", stream=True),
                      Principal)
    assert hashed.calls == [(raw,)]
