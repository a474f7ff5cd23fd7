"""UI sessions (DESIGN §12): a signed, expiring cookie that any replica accepts, and the CSRF
tokens bound to it. Pure: the secret comes from the caller (every replica shares it: Redis
``flagedge:secret`` or ``stream_secret``, as stream tokens use), the clock too.

Cookie value: ``base64url(json).base64url(mac)`` with json ``{"v", "sid", "kid", "env",
"exp"}`` and mac = HMAC-SHA256(secret, "flagedge-ui-session|" + json). It names the key by id
only, never the key itself. The purpose prefix keeps a MAC made for one use (a stream token,
a CSRF token) from verifying as another.

CSRF: a per-session token, HMAC(secret, "flagedge-ui-csrf|" + sid): nothing to store, any
replica recomputes it. Sign-in, before any session exists, binds its form to a random nonce in
a short-lived cookie the same way (``signin_token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

FORMAT = 1
LIFETIME_S = 8 * 3600
SESSION_PURPOSE = b"flagedge-ui-session|"
CSRF_PURPOSE = b"flagedge-ui-csrf|"
SIGNIN_PURPOSE = b"flagedge-ui-signin|"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str  # random; what sign-out revokes
    key_id: str  # the admin key's id (12 hex), never the key
    env: str
    expires: int  # Unix seconds

    def ttl(self, now: float) -> int:
        """Seconds left (at least 1: a revocation must outlive the cookie, never expire first)."""
        return max(1, int(self.expires - now) + 1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, purpose + payload, hashlib.sha256).digest()


def new_session(key_id: str, env: str, now: float, lifetime: int = LIFETIME_S) -> Session:
    return Session(secrets.token_urlsafe(16), key_id, env, int(now) + lifetime)


def encode(session: Session, secret: bytes) -> str:
    payload = orjson.dumps({"v": FORMAT, "sid": session.sid, "kid": session.key_id,
                            "env": session.env, "exp": session.expires})
    return f"{_b64(payload)}.{_b64(_mac(secret, SESSION_PURPOSE, payload))}"


def decode(value: str | None, secrets_: tuple[bytes, ...], now: float) -> Session | None:
    """The session a cookie holds if one of ``secrets_`` signed it and it has not expired;
    None for anything else (missing, tampered, expired, malformed, another format)."""
    if not value or value.count(".") != 1:
        return None
    head, tail = value.split(".")
    try:
        payload, mac = _unb64(head), _unb64(tail)
    except ValueError:
        return None
    if not any(hmac.compare_digest(mac, _mac(s, SESSION_PURPOSE, payload))
               for s in secrets_ if s):
        return None
    try:
        data = orjson.loads(payload)
        session = Session(str(data["sid"]), str(data["kid"]), str(data["env"]),
                          int(data["exp"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if data.get("v") != FORMAT or session.expires <= now:
        return None
    return session


def csrf_token(session: Session, secret: bytes) -> str:
    return _b64(_mac(secret, CSRF_PURPOSE, session.sid.encode()))


def csrf_ok(session: Session, secret: bytes, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(presented or "", csrf_token(session, secret))


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def signin_token(nonce: str, secret: bytes) -> str:
    return _b64(_mac(secret, SIGNIN_PURPOSE, nonce.encode()))


def signin_ok(nonce: str | None, secret: bytes, presented: str | None) -> bool:
    return bool(nonce) and bool(presented) and hmac.compare_digest(
        presented or "", signin_token(nonce or "", secret))
