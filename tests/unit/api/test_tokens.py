"""Stream tokens are scoped to the OFREP events stream, bound to a live key, versioned, and
survive Redis's secret being recreated for one token lifetime (issue 20)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
from starlette.requests import Request

from proxy.api.auth import Authenticator, Principal
from proxy.api.tokens import EVENTS, StreamTokens
from proxy.keys import KeyRecord, KeyRing, generate_key, hash_key


def request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/x", "headers": raw,
                    "query_string": query.encode()})


def ring_of(*kinds: str, env: str = "prod") -> tuple[KeyRing, list[str]]:
    ring, raws, records = KeyRing(), [], {}
    for kind in kinds:
        raw = generate_key(kind)
        h = hash_key(raw)
        records[h] = KeyRecord(id=h[:12], env=env, kind=kind, name=kind, created_at=0.0)
        raws.append(raw)
    ring.replace_all(records)
    return ring, raws


def details(resp) -> str:
    return orjson.loads(resp.body)["errorDetails"]


def test_token_opens_only_the_scope_it_was_asked_for():
    tokens = StreamTokens(b"s" * 32, ttl=3600)
    ring, (server,) = ring_of("server")
    auth = Authenticator(ring, tokens)
    token = tokens.issue("prod", "server", ring.lookup(server).id)
    q = f"token={token}"
    # The evaluated and rules streams pass no token scope: refused, with a reason.
    for need in ("client", "server"):
        resp = auth.authorize(request(query=q), need, stream=True)
        assert resp.status_code == 401 and "only /ofrep/v1/events" in details(resp)
    p = auth.authorize(request(query=q), "client", stream=True, token_scope=EVENTS)
    # Whatever key minted it, a token grants what a client key grants.
    assert isinstance(p, Principal) and (p.kind, p.via_token) == ("client", True)
    assert auth.authorize(request(query=q), "server", stream=True,
                          token_scope=EVENTS).status_code == 403


def test_token_of_a_changed_key_is_refused():
    tokens = StreamTokens(b"s" * 32, ttl=3600)
    ring, (client,) = ring_of("client")
    auth = Authenticator(ring, tokens)
    h = hash_key(client)
    token = tokens.issue("prod", "client", h[:12])
    q = f"token={token}"
    assert isinstance(auth.authorize(request(query=q), "client", stream=True,
                                     token_scope=EVENTS), Principal)
    for changed in ({"kind": "server"}, {"env": "staging"}):
        record = KeyRecord(id=h[:12], env=changed.get("env", "prod"),
                           kind=changed.get("kind", "client"), name="x", created_at=0.0)
        ring.put(h, record)
        resp = auth.authorize(request(query=q), "client", stream=True, token_scope=EVENTS)
        assert resp.status_code == 401 and "revoked or changed" in details(resp), changed


def test_query_key_only_for_client_keys():
    ring, (client, server, admin) = ring_of("client", "server", "admin")
    auth = Authenticator(ring, StreamTokens(b"s" * 32))
    assert isinstance(auth.authorize(request(query=f"key={client}"), "client", stream=True),
                      Principal)
    for raw, need in ((server, "server"), (admin, "client"), (server, "client")):
        resp = auth.authorize(request(query=f"key={raw}"), need, stream=True)
        assert resp.status_code == 401 and "Authorization header" in details(resp)
        # The same key in a header is fine.
        ok = auth.authorize(request({"Authorization": f"Bearer {raw}"}), need, stream=True)
        assert isinstance(ok, Principal)


def test_unversioned_tokens_of_the_old_format_are_refused_cleanly():
    secret = b"s" * 32
    tokens = StreamTokens(secret, ttl=3600)
    window = tokens.window()
    payload = f"prod|client|abcdefabcdef|{window}".encode()  # the v1 layout, signed right
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    old = ".".join(base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (payload, mac))
    assert tokens.verify(old) is None
    for junk in ("", ".", "a.b", "\udcff.x", "dg.dg", f"{old}.x"):
        assert tokens.verify(junk) is None


def test_previous_secret_verifies_tokens_minted_before_it_was_replaced():
    current = {"secret": b"before-the-loss" * 2}
    previous: dict[str, bytes | None] = {"secret": None}
    tokens = StreamTokens(b"fallback", ttl=3600, provider=lambda: current["secret"],
                          previous=lambda: previous["secret"])
    now = time.time()
    minted = tokens.issue("prod", "client", "abcdefabcdef")
    stale = tokens.issue("prod", "client", "abcdefabcdef", window=tokens.window(now) - 1)
    # Redis lost its data: the secret is recreated; the source remembers the old one.
    previous["secret"], current["secret"] = current["secret"], b"after-the-loss" * 2
    assert tokens.verify(minted) is not None and tokens.verify(stale) is not None
    # Not for tokens of a later window (nobody signs with the old secret after the loss)...
    later = StreamTokens(previous["secret"], ttl=3600).issue(
        "prod", "client", "abcdefabcdef", window=tokens.window(now) + 1)
    assert tokens.verify(later, now + 3600) is None
    # ...and the lifetime bound still holds: two windows on, the old token is gone.
    assert tokens.verify(minted, now + 2 * 3600) is None
    # Without the previous secret (the old behaviour), the token is refused.
    tokens.previous = None
    assert tokens.verify(minted) is None
