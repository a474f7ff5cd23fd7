"""Signed stream tokens for ``?token=`` on the OFREP events stream URL (DESIGN §4).

A browser's ``EventSource(url)`` cannot send headers, so the bulk response hands out a URL
carrying a token instead of the API key:
``base64url("v2"|scope|env|kind|key_id|window).base64url(mac)`` where mac =
HMAC-SHA256(secret, payload) and window = ``floor(now / ttl)``.

- Scope: a token opens one thing, ``events`` (``GET /ofrep/v1/events``, change notifications
  that carry version ids and no flag data), whatever kind of key it was minted from. The
  evaluated and rules streams take API keys only.
- Key: the token names its key by id, env and kind; ``proxy.api.auth`` accepts it only while
  that key is live in the key ring with the same env and kind (revoked or changed: 401).
- Lifetime: valid in its own window and the next one (so between ``ttl`` and ``2*ttl``); the
  window id is part of the bulk ETag, so a client never keeps an expired URL across a 304.
- Secret: every replica shares it (Redis ``flagedge:secret``, or ``stream_secret``), so any of
  them accepts any token. When Redis loses its data the secret is recreated with another
  value; ``previous`` (the source's last secret before the loss) still verifies the tokens
  minted before it, which expire on their own within one lifetime.
- Versioned: a payload without the ``v2`` tag (the unscoped format of earlier releases) is
  refused like any bad token (401), never a parse error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

VERSION = "v2"
EVENTS = "events"  # the one scope: GET /ofrep/v1/events


@dataclass(frozen=True, slots=True)
class StreamGrant:
    env: str
    kind: str
    key_id: str
    window: int
    scope: str = EVENTS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


SecretSource = Callable[[], bytes | None]


class StreamTokens:
    def __init__(self, secret: bytes, ttl: int = 86_400,
                 provider: SecretSource | None = None, previous: SecretSource | None = None):
        """``secret`` signs until ``provider`` (e.g. the Redis source's ``flagedge:secret``)
        returns one; the provider's secret then wins whenever it changes. ``previous`` gives
        the secret the provider had before Redis lost its data (None if it never did)."""
        if not secret:
            raise ValueError("stream token secret must not be empty")
        self._secret = secret
        self.ttl = ttl
        self.provider = provider
        self.previous = previous
        # (previous secret, window it was first seen in): it verifies only tokens minted no
        # later than that window, so it lapses one token lifetime after the loss.
        self._retired: tuple[bytes, int] | None = None
        self._memo: dict[tuple[str, str, str, int], str] = {}

    @property
    def secret(self) -> bytes:
        self._refresh()
        return self._secret

    def _refresh(self) -> None:
        if self.provider is not None:
            shared = self.provider()
            if shared and shared is not self._secret:
                self.set_secret(shared)

    def set_secret(self, secret: bytes) -> None:
        if secret and secret != self._secret:
            self._secret = secret
            self._memo.clear()

    def window(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.ttl)

    def issue(self, env: str, kind: str, key_id: str, window: int | None = None) -> str:
        """A token for the events stream of ``env``, naming the key that asked for it."""
        self._refresh()
        window = self.window() if window is None else window
        memo_key = (env, kind, key_id, window)
        token = self._memo.get(memo_key)
        if token is None:  # memoised: the bulk hot path issues one per request
            payload = f"{VERSION}|{EVENTS}|{env}|{kind}|{key_id}|{window}".encode()
            token = f"{_b64(payload)}.{_b64(_mac(self._secret, payload))}"
            if len(self._memo) > 10_000:
                self._memo.clear()
            self._memo[memo_key] = token
        return token

    def verify(self, token: str, now: float | None = None) -> StreamGrant | None:
        """The grant a token carries, or None if it is forged, malformed, of an older format
        or expired."""
        try:
            payload_b64, mac_b64 = token.split(".", 1)
            payload = _unb64(payload_b64)
            mac = _unb64(mac_b64)
            version, scope, env, kind, key_id, window_text = payload.decode().split("|")
            window = int(window_text)
        except (ValueError, TypeError):  # UnicodeDecodeError and binascii.Error included
            return None
        if version != VERSION:
            return None
        current = self.window(now)
        if not current - 1 <= window <= current:
            return None
        self._refresh()
        if not hmac.compare_digest(mac, _mac(self._secret, payload)):
            retired = self._retired_secret(current)
            if retired is None or window > retired[1]:
                return None
            if not hmac.compare_digest(mac, _mac(retired[0], payload)):
                return None
        return StreamGrant(env=env, kind=kind, key_id=key_id, window=window, scope=scope)

    def _retired_secret(self, current: int) -> tuple[bytes, int] | None:
        """The secret before Redis's data loss, with the window it was first seen in (a
        refused token's path only: nothing on the hot path asks)."""
        old = self.previous() if self.previous is not None else None
        if not old or old == self._secret:
            return None
        if self._retired is None or self._retired[0] != old:
            self._retired = (old, current)
        return self._retired
