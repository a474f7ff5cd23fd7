"""Signed stream tokens for ``?token=`` on EventSource URLs (DESIGN §4).

A browser's ``EventSource(url)`` cannot send headers, so the bulk response hands out a URL
carrying a token instead of the API key: ``base64url(env|kind|key_id|window).base64url(mac)``
where mac = HMAC-SHA256(secret, payload) and window = ``floor(now / ttl)``. Every replica
shares the secret (Redis ``flagedge:secret``), so any of them accepts any token. A token is
valid in its own window and the next one (so between ``ttl`` and ``2*ttl``); the window id is
part of the bulk ETag, so a client never keeps an expired URL across a 304.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamGrant:
    env: str
    kind: str
    key_id: str
    window: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    def __init__(self, secret: bytes, ttl: int = 86_400,
                 provider: Callable[[], bytes | None] | None = None):
        """``secret`` signs until ``provider`` (e.g. the Redis source's ``flagedge:secret``)
        returns one; the provider's secret then wins whenever it changes."""
        if not secret:
            raise ValueError("stream token secret must not be empty")
        self._secret = secret
        self.ttl = ttl
        self.provider = provider
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
        self._refresh()
        window = self.window() if window is None else window
        memo_key = (env, kind, key_id, window)
        token = self._memo.get(memo_key)
        if token is None:  # memoised: the bulk hot path issues one per request
            payload = f"{env}|{kind}|{key_id}|{window}".encode()
            mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
            token = f"{_b64(payload)}.{_b64(mac)}"
            if len(self._memo) > 10_000:
                self._memo.clear()
            self._memo[memo_key] = token
        return token

    def verify(self, token: str, now: float | None = None) -> StreamGrant | None:
        """The grant a token carries, or None if it is forged, malformed or expired."""
        try:
            payload_b64, mac_b64 = token.split(".", 1)
            payload = _unb64(payload_b64)
            mac = _unb64(mac_b64)
        except (ValueError, TypeError):
            return None
        self._refresh()
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            env, kind, key_id, window_text = payload.decode().split("|")
            window = int(window_text)
        except (UnicodeDecodeError, ValueError):
            return None
        current = self.window(now)
        if not current - 1 <= window <= current:
            return None
        return StreamGrant(env=env, kind=kind, key_id=key_id, window=window)
