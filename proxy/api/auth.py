"""Who is calling: API keys (header, or on stream URLs ``?key=``/signed ``?token=``), their
kind (client < server < admin), their environment, and a per-key token-bucket rate limit.

Keys are looked up by hash in a key ring fed by Redis (or ``--keys FILE``); the raw key is
never stored or logged. Rate limits are per key *per worker process* (no Redis round trip on
the hot path): with N workers and R replicas a key may get up to N*R times its limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from proxy.api import errors
from proxy.api.tokens import StreamTokens
from proxy.keys import hash_key

log = logging.getLogger("flagedge.auth")

KINDS = ("client", "server", "admin")
_RANK = {kind: i for i, kind in enumerate(KINDS)}


def header_map(request: Request) -> dict[bytes, bytes]:
    """Raw request headers as a dict (ASGI names are lower-case bytes): one pass instead of
    a scan per ``request.headers.get``."""
    return dict(request.scope["headers"])


class KeyLookup(Protocol):
    def lookup(self, raw_key: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Principal:
    env: str
    kind: str
    key_id: str
    name: str = ""
    rate_limit: float | None = None
    via_token: bool = False

    def allows(self, kind: str) -> bool:
        return _RANK.get(self.kind, -1) >= _RANK[kind]


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, now: float) -> int:
        """0 if a request may proceed, else the whole seconds to wait (Retry-After)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class Authenticator:
    def __init__(self, keyring: KeyLookup | None, tokens: StreamTokens, *, no_auth: bool = False,
                 env: str = "default", rate_limit: float = 0.0, rate_burst: float = 0.0):
        self.keyring = keyring
        self.tokens = tokens
        self.no_auth = no_auth
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self._anonymous = Principal(env=env, kind="admin", key_id="no-auth", name="no-auth")
        self._buckets: dict[str, TokenBucket] = {}
        self._live_ids: dict[str, Any] | None = None  # key id -> record
        self._known: dict[str, Principal] = {}
        subscribe = getattr(keyring, "subscribe", None)
        if callable(subscribe):
            subscribe(self.on_key_changed)
        if no_auth:
            log.warning("AUTHENTICATION IS DISABLED (--no-auth): every caller is admin of env %r;"
                        " use this for local development only", env)

    # -- identification ------------------------------------------------------------------
    def identify(self, request: Request, *, stream: bool = False,
                 headers: Mapping[bytes, bytes] | None = None) -> Principal | Response:
        if self.no_auth:
            return self._anonymous
        if headers is None:
            headers = header_map(request)
        raw: str | None = None
        auth = headers.get(b"authorization")
        if auth:
            scheme, _, value = auth.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return errors.unauthorized("Authorization must be 'Bearer <key>'")
            raw = value.strip()
        else:
            x_key = headers.get(b"x-api-key")
            raw = x_key.decode("latin-1") if x_key is not None else None
        if raw is None and stream:
            params = request.query_params
            token = params.get("token")
            if token is not None:
                return self._from_token(token)
            raw = params.get("key")
        if not raw:
            return errors.unauthorized("missing API key (Authorization: Bearer, or X-API-Key)")
        # The memo is keyed by the key's sha256, like the key ring: no raw secret is kept as a
        # dict key (nor compared byte by byte against one).
        digest = hash_key(raw)
        principal = self._known.get(digest)
        if principal is None:
            record = self.keyring.lookup(raw) if self.keyring is not None else None
            if record is None:
                if not self._keys_loaded():
                    # We cannot tell a valid key from a bad one yet: a 401 would make clients
                    # give up for good (the OFREP web provider goes FATAL); 503 says retry.
                    return errors.unavailable("API keys are not loaded yet (key source unreachable)")
                return errors.unauthorized("unknown or revoked API key")
            principal = Principal(env=record.env, kind=str(record.kind), key_id=record.id,
                                  name=record.name, rate_limit=getattr(record, "rate_limit", None))
            if len(self._known) > 10_000:
                self._known.clear()
            # Hot-path memo of found keys; any revocation or change clears it (on_key_changed).
            self._known[digest] = principal
        return principal

    def _from_token(self, token: str) -> Principal | Response:
        if not self._keys_loaded():
            return errors.unavailable("API keys are not loaded yet (key source unreachable)")
        grant = self.tokens.verify(token)
        if grant is None:
            return errors.unauthorized("invalid or expired stream token")
        if not self._key_alive(grant.key_id):
            return errors.unauthorized("the key behind this stream token was revoked")
        # The key's own rate limit follows its token (else the token would bypass it).
        record = (self._live_ids or {}).get(grant.key_id)
        return Principal(env=grant.env, kind=grant.kind, key_id=grant.key_id, via_token=True,
                         rate_limit=getattr(record, "rate_limit", None))

    def _keys_loaded(self) -> bool:
        return self.keyring is None or bool(getattr(self.keyring, "loaded", True))

    def _key_alive(self, key_id: str) -> bool:
        """Is the key a token was issued to still valid? (Revocation ends its streams too.)"""
        if self.keyring is None:
            return False
        records = getattr(self.keyring, "records", None)
        if records is None:
            return True  # a key ring that cannot list: the signature alone decides
        if self._live_ids is None or key_id not in self._live_ids:
            # Recomputed only after a revocation or for a key added since: O(keys), rare.
            self._live_ids = {r.id: r for r in records().values()}
        return key_id in self._live_ids

    def on_key_changed(self, record: Any) -> None:
        """Key ring callback (revoked or changed key): forget what we derived from it."""
        self._live_ids = None
        self._known = {}
        self._buckets.pop(record.id, None)

    # -- authorisation + rate limit -------------------------------------------------------
    def authorize(self, request: Request, need: str, *, stream: bool = False,
                  headers: Mapping[bytes, bytes] | None = None) -> Principal | Response:
        """The caller if it may do something that needs kind ``need``; else a 401/403/429."""
        principal = self.identify(request, stream=stream, headers=headers)
        if isinstance(principal, Response):
            return principal
        if not principal.allows(need):
            return errors.forbidden(f"a {principal.kind} key cannot do this (needs {need} or above)")
        wait = self.throttle(principal)
        if wait:
            return errors.too_many_requests(wait)
        return principal

    def throttle(self, principal: Principal) -> int:
        rate = principal.rate_limit if principal.rate_limit else self.rate_limit
        if not rate or principal is self._anonymous:
            return 0
        bucket = self._buckets.get(principal.key_id)
        if bucket is None or bucket.rate != rate:
            bucket = TokenBucket(rate, self.rate_burst or max(1.0, rate))
            if len(self._buckets) > 100_000:  # bounded: forget idle keys rather than grow
                self._buckets.clear()
            self._buckets[principal.key_id] = bucket
        return bucket.take(time.monotonic())

