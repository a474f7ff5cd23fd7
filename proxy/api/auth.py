"""Who is calling: API keys (header, or on stream URLs ``?key=``/signed ``?token=``), their
kind (client < server < admin), their environment, and a per-key token-bucket rate limit.

URLs end up in browser history, proxy logs and Referer headers, so what a URL may carry is
narrow: ``?key=`` only a client key (a server or admin key there is refused, 401, even when
it is valid), ``?token=`` only on the stream its scope names (the OFREP events stream, see
``proxy.api.tokens``) and only while the key it names is live with the same env and kind.

Keys are looked up by hash in a key ring fed by Redis (or ``--keys FILE``); the raw key is
never stored or logged. Which key a caller holds, and whether it outranks a need, is decided
in ``proxy.keys`` (shared with every surface that takes a key); this module reads the key
from the request and answers 401/403/429/503.

Rate limits are per key *per worker process* (no Redis round trip on the hot path): with N
workers and R replicas a key may get up to N*R times its limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from proxy.api import errors
from proxy.api.tokens import StreamTokens
from proxy.keys import KeyRecord, KeyRing, Refusal, hash_key, keys_loaded, kind_allows
from proxy.keys import identify as identify_key  # Authenticator.identify is the HTTP side

log = logging.getLogger("flagedge.auth")

NOT_LOADED = "API keys are not loaded yet (key source unreachable)"
KEY_IN_URL = ("server and admin keys are not accepted in URLs (?key=): send them in the "
              "Authorization header")
TOKEN_SCOPE = "stream tokens open only /ofrep/v1/events; send an API key header here"


def header_map(request: Request) -> dict[bytes, bytes]:
    """Raw request headers as a dict (ASGI names are lower-case bytes): one pass instead of
    a scan per ``request.headers.get``."""
    return dict(request.scope["headers"])


@dataclass(frozen=True, slots=True)
class Principal:
    env: str
    kind: str
    key_id: str
    name: str = ""
    rate_limit: float | None = None
    via_token: bool = False

    def allows(self, kind: str) -> bool:
        return kind_allows(self.kind, kind)


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
    def __init__(self, keyring: KeyRing | None, tokens: StreamTokens, *, no_auth: bool = False,
                 env: str = "default", rate_limit: float = 0.0, rate_burst: float = 0.0):
        self.keyring = keyring
        self.tokens = tokens
        self.no_auth = no_auth
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self._anonymous = Principal(env=env, kind="admin", key_id="no-auth", name="no-auth")
        self._buckets: dict[str, TokenBucket] = {}
        self._known: dict[str, Principal] = {}
        # Client keys by their raw Authorization header (b"Bearer fe_..."), unthrottled ones
        # only: the OFREP hot path's one dict lookup (``client``). Client keys ship inside
        # browser and mobile apps, so holding them raw in memory reveals nothing; server and
        # admin keys are secrets and are only ever held as hashes (``_known``).
        self._clients: dict[bytes, Principal] = {}
        if keyring is not None:
            keyring.subscribe(self.on_key_changed)
        if no_auth:
            log.warning("AUTHENTICATION IS DISABLED (--no-auth): every caller is admin of env %r;"
                        " use this for local development only", env)

    # -- identification ------------------------------------------------------------------
    def identify(self, request: Request | None, *, stream: bool = False, token_scope: str | None = None,
                 headers: Mapping[bytes, bytes] | None = None) -> Principal | Response:
        """``stream``: the URL may carry ``?key=`` (client keys) or ``?token=`` (accepted
        only when its scope is ``token_scope``)."""
        if self.no_auth:
            return self._anonymous
        if headers is None:
            assert request is not None, "identify needs the request or its headers"
            headers = header_map(request)
        api_key: str | None = None
        authorization = headers.get(b"authorization")
        if authorization:
            scheme, _, value = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return errors.unauthorized("Authorization must be 'Bearer <key>'")
            api_key = value.strip()
        else:
            x_key = headers.get(b"x-api-key")
            api_key = x_key.decode("latin-1") if x_key is not None else None
        in_url = False
        if api_key is None and stream and request is not None:
            params = request.query_params
            token = params.get("token")
            if token is not None:
                return self._from_token(token, token_scope)
            api_key = params.get("key")
            in_url = api_key is not None
        if not api_key:
            return errors.unauthorized("missing API key (Authorization: Bearer, or X-API-Key)")
        # The memo is keyed by the key's sha256, like the key ring: no raw secret is kept as a
        # dict key (nor compared byte by byte against one).
        digest = hash_key(api_key)
        principal = self._known.get(digest)
        if principal is None:
            found = identify_key(self.keyring, api_key)
            if found is Refusal.NOT_LOADED:
                # We cannot tell a valid key from a bad one yet: a 401 would make clients
                # give up for good (the OFREP web provider goes FATAL); 503 says retry.
                return errors.unavailable(NOT_LOADED)
            if found is Refusal.UNKNOWN:
                return errors.unauthorized("unknown or revoked API key")
            principal = Principal(env=found.env, kind=found.kind, key_id=found.id,
                                  name=found.name, rate_limit=found.rate_limit)
            if len(self._known) > 10_000:
                self._known.clear()
            # Hot-path memo of found keys; any revocation or change clears it (on_key_changed).
            self._known[digest] = principal
        if (authorization and principal.kind == "client" and not principal.rate_limit
                and not self.rate_limit):
            if len(self._clients) > 10_000:
                self._clients.clear()
            self._clients[authorization] = principal
        if in_url and principal.kind != "client":
            return errors.unauthorized(KEY_IN_URL)
        return principal

    def _from_token(self, token: str, scope: str | None) -> Principal | Response:
        if not keys_loaded(self.keyring):
            return errors.unavailable(NOT_LOADED)
        grant = self.tokens.verify(token)
        if grant is None:
            return errors.unauthorized("invalid or expired stream token")
        if scope is None or grant.scope != scope:
            return errors.unauthorized(TOKEN_SCOPE)
        # Is the key the token was issued to still live, as it was? (Revocation ends its
        # streams too; a key re-written with another env or kind does not keep its tokens.)
        holder = self.keyring.by_id(grant.key_id) if self.keyring is not None else None
        if holder is None or (holder.env, holder.kind) != (grant.env, grant.kind):
            return errors.unauthorized("the key behind this stream token was revoked or changed")
        # A token opens what a client key opens, whatever key minted it; the key's own rate
        # limit follows its token (else the token would bypass it).
        return Principal(env=grant.env, kind="client", key_id=grant.key_id, via_token=True,
                         rate_limit=holder.rate_limit)

    def on_key_changed(self, record: KeyRecord) -> None:
        """Key ring callback (revoked or changed key): forget what we derived from it."""
        self._known = {}
        self._clients = {}
        self._buckets.pop(record.id, None)

    def client(self, authorization: bytes | None) -> Principal | None:
        """The OFREP hot path: the principal of a client key sent before in this exact
        ``Authorization`` header, when nothing limits its rate; else None (``authorize``)."""
        return self._clients.get(authorization) if authorization is not None else None

    # -- authorisation + rate limit -------------------------------------------------------
    def authorize(self, request: Request | None, need: str, *, stream: bool = False,
                  token_scope: str | None = None,
                  headers: Mapping[bytes, bytes] | None = None) -> Principal | Response:
        """The caller if it may do something that needs kind ``need``; else a 401/403/429."""
        principal = self.identify(request, stream=stream, token_scope=token_scope,
                                  headers=headers)
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

