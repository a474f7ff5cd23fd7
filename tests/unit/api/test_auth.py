"""API keys, kinds, stream tokens and the per-key token bucket."""

from __future__ import annotations

import time

import orjson
import pytest
from starlette.requests import Request

from proxy.api.auth import Authenticator, Principal, TokenBucket
from proxy.api.tokens import EVENTS, StreamTokens
from proxy.keys import KeyRecord, KeyRing, generate_key, hash_key


def request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/x", "headers": raw,
                    "query_string": query.encode()})


def events(auth: Authenticator, query: str):
    """``auth`` on the OFREP events stream (where ?key= and ?token= are accepted)."""
    return auth.authorize(request(query=query), "client", stream=True, token_scope=EVENTS)


def ring_with(*specs: tuple[str, str, float | None]) -> tuple[KeyRing, list[str]]:
    ring, raws, records = KeyRing(), [], {}
    for env, kind, rate in specs:
        raw = generate_key(kind)
        h = hash_key(raw)
        records[h] = KeyRecord(id=h[:12], env=env, kind=kind, name=f"{kind}-{env}",
                               created_at=time.time(), rate_limit=rate)
        raws.append(raw)
    ring.replace_all(records)
    return ring, raws


def body(resp) -> dict:
    return orjson.loads(resp.body)


@pytest.fixture
def tokens() -> StreamTokens:
    return StreamTokens(b"s" * 32, ttl=3600)


def test_bearer_and_x_api_key_identify_env_and_kind(tokens):
    ring, (client, server) = ring_with(("prod", "client", None), ("dev", "server", None))
    auth = Authenticator(ring, tokens)
    p = auth.authorize(request({"Authorization": f"Bearer {client}"}), "client")
    assert isinstance(p, Principal) and (p.env, p.kind) == ("prod", "client")
    p = auth.authorize(request({"X-API-Key": server}), "server")
    assert isinstance(p, Principal) and (p.env, p.kind) == ("dev", "server")


def test_missing_unknown_and_malformed_keys_are_401(tokens):
    ring, _ = ring_with(("prod", "client", None))
    auth = Authenticator(ring, tokens)
    for headers in ({}, {"X-API-Key": "fe_client_nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):
        resp = auth.authorize(request(headers), "client")
        assert resp.status_code == 401, headers
        assert body(resp)["errorCode"] == "UNAUTHORIZED"


def test_kind_hierarchy_gives_403(tokens):
    ring, (client, server, admin) = ring_with(("e", "client", None), ("e", "server", None),
                                              ("e", "admin", None))
    auth = Authenticator(ring, tokens)
    assert auth.authorize(request({"X-API-Key": client}), "server").status_code == 403
    assert isinstance(auth.authorize(request({"X-API-Key": server}), "server"), Principal)
    assert auth.authorize(request({"X-API-Key": server}), "admin").status_code == 403
    assert isinstance(auth.authorize(request({"X-API-Key": admin}), "client"), Principal)


def test_query_key_only_on_stream_urls(tokens):
    ring, (client,) = ring_with(("e", "client", None))
    auth = Authenticator(ring, tokens)
    assert auth.authorize(request(query=f"key={client}"), "client").status_code == 401
    assert isinstance(events(auth, f"key={client}"),
                      Principal)


def test_stream_token_round_trip_expiry_forgery_and_revocation(tokens):
    ring, (client,) = ring_with(("prod", "client", None))
    auth = Authenticator(ring, tokens)
    rec = ring.lookup(client)
    token = tokens.issue("prod", "client", rec.id)
    p = events(auth, f"token={token}")
    assert isinstance(p, Principal) and (p.env, p.key_id, p.via_token) == ("prod", rec.id, True)
    # Not accepted where only headers are allowed.
    assert auth.authorize(request(query=f"token={token}"), "client").status_code == 401
    # Forged: same payload, other secret.
    forged = StreamTokens(b"x" * 32, ttl=3600).issue("prod", "admin", rec.id)
    assert events(auth, f"token={forged}").status_code == 401
    assert tokens.verify("garbage") is None and tokens.verify("a.b") is None
    # Valid for its window and the next, not after.
    now = time.time()
    w = tokens.window(now)
    old = tokens.issue("prod", "client", rec.id, window=w - 1)
    older = tokens.issue("prod", "client", rec.id, window=w - 2)
    assert tokens.verify(old, now) is not None
    assert tokens.verify(older, now) is None
    # Revoking the key kills its tokens.
    ring.remove(hash_key(client))
    resp = events(auth, f"token={token}")
    assert resp.status_code == 401 and "revoked" in body(resp)["errorDetails"]


def test_token_for_key_added_after_first_check(tokens):
    ring, (a,) = ring_with(("e", "client", None))
    auth = Authenticator(ring, tokens)
    t = tokens.issue("e", "client", ring.lookup(a).id)
    assert isinstance(events(auth, f"token={t}"), Principal)
    raw = generate_key("client")
    h = hash_key(raw)
    ring.put(h, KeyRecord(id=h[:12], env="e", kind="client", name="late", created_at=0.0))
    t2 = tokens.issue("e", "client", h[:12])
    assert isinstance(events(auth, f"token={t2}"), Principal)


def test_rate_limit_429_with_integer_retry_after(tokens):
    ring, (slow, fast) = ring_with(("e", "client", 0.5), ("e", "client", None))
    auth = Authenticator(ring, tokens, rate_limit=1000.0)
    assert isinstance(auth.authorize(request({"X-API-Key": slow}), "client"), Principal)
    resp = auth.authorize(request({"X-API-Key": slow}), "client")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
    assert body(resp)["errorCode"] == "RATE_LIMITED"
    # Another key has its own bucket (the default rate).
    for _ in range(50):
        assert isinstance(auth.authorize(request({"X-API-Key": fast}), "client"), Principal)


def test_token_bucket_refills():
    bucket = TokenBucket(rate=10.0, burst=2.0)
    t = bucket.stamp
    assert bucket.take(t) == 0 and bucket.take(t) == 0
    assert bucket.take(t) == 1  # empty: 0.1 s to the next token, rounded up to whole seconds
    assert bucket.take(t + 0.2) == 0


def test_no_auth_is_admin_of_configured_env(tokens, caplog):
    with caplog.at_level("WARNING", logger="flagedge.auth"):
        auth = Authenticator(None, tokens, no_auth=True, env="dev")
    assert "DISABLED" in caplog.text
    p = auth.authorize(request(), "admin")
    assert isinstance(p, Principal) and (p.env, p.kind) == ("dev", "admin")


def test_revocation_beats_the_lookup_memo(tokens):
    ring, (client,) = ring_with(("e", "client", None))
    auth = Authenticator(ring, tokens)
    for _ in range(3):
        assert isinstance(auth.authorize(request({"X-API-Key": client}), "client"), Principal)
    ring.remove(hash_key(client))
    assert auth.authorize(request({"X-API-Key": client}), "client").status_code == 401


def test_keys_not_loaded_yet_is_503_retry_not_401(tokens):
    # A proxy started while Redis is down has no key ring yet: it cannot tell a valid key
    # from a bad one, and a 401 would make the web provider give up (FATAL) for good.
    ring = KeyRing()
    auth = Authenticator(ring, tokens)
    raw = generate_key("client")
    for req, stream in ((request({"X-API-Key": raw}), False),
                        (request(query=f"key={raw}"), True),
                        (request(query="token=abc.def"), True)):
        resp = auth.authorize(req, "client", stream=stream)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
        assert "not loaded" in body(resp)["errorDetails"]
    ring.replace_all({})  # loaded, and the key is not in it
    assert auth.authorize(request({"X-API-Key": raw}), "client").status_code == 401


def test_the_hot_path_memo_holds_unthrottled_client_keys_only_and_forgets_revoked_ones(tokens):
    """``client(authorization)``: one dict lookup by the raw header for a client key seen
    before; never a server key (a secret, held only hashed), nor a rate-limited key (its
    bucket must see every request), nor a key revoked since."""
    ring, (client, limited, server) = ring_with(("e", "client", None), ("e", "client", 5.0),
                                                ("e", "server", None))
    auth = Authenticator(ring, tokens)
    header = {raw: f"Bearer {raw}" for raw in (client, limited, server)}
    assert auth.client(header[client].encode()) is None  # not seen yet
    for raw in (client, limited, server):
        assert isinstance(auth.authorize(request({"Authorization": header[raw]}), "client"),
                          Principal)
    seen = auth.client(header[client].encode())
    assert seen is not None and seen.kind == "client" and seen.env == "e"
    assert auth.client(header[limited].encode()) is None
    assert auth.client(header[server].encode()) is None
    assert auth.client(None) is None
    ring.remove(hash_key(client))
    assert auth.client(header[client].encode()) is None
    assert auth.authorize(request({"Authorization": header[client]}), "client").status_code == 401
