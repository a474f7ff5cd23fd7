"""Webhooks without delivery (DESIGN §10): the record, its secret, Standard Webhooks
signatures, and the SSRF check of a URL.

Signatures follow Standard Webhooks (standardwebhooks.com): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 with the secret's bytes, sent as
``webhook-signature: v1,<base64>``. A secret ``whsec_<base64>`` is the base64-decoded bytes
(as Standard Webhooks define it); any other string is its UTF-8 bytes (for receivers that
were given a plain shared secret).

SSRF: a webhook URL is resolved and every address it resolves to must be public (not
loopback, private, link-local, CGNAT, multicast, reserved, unspecified) unless the webhook
was added with ``allow_private``; the check runs when it is added and again before every
delivery (a name may resolve elsewhere later). Redirects are never followed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.storage import notify as stored
from proxy.storage.replies import text
from proxy.storage.requests import redis_time

FORMATS = ("json", "slack")
SECRET_PREFIX = "whsec_"


class UnsafeURL(ValueError):
    """The URL is not an http(s) URL to public addresses (and private ones were not allowed)."""


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    env: str
    url: str
    format: str  # json | slack
    secret: str  # whsec_<base64> or any string (raw bytes)
    allow_private: bool
    created_at: float  # Unix seconds (Redis' clock): entries older than this are not sent
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "env": self.env, "url": self.url, "format": self.format,
                "secret": self.secret, "allow_private": self.allow_private,
                "created_at": self.created_at, "created_by": self.created_by}

    def public_json(self) -> dict[str, Any]:
        """As listed: the secret never leaves Redis after ``notify add`` printed it."""
        out = self.to_json()
        del out["secret"]
        return out

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def from_json(cls, raw: bytes | Mapping[str, Any]) -> Webhook:
        doc = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
        try:
            return cls(str(doc["id"]), str(doc["env"]), str(doc["url"]), str(doc["format"]),
                       str(doc["secret"]), bool(doc.get("allow_private", False)),
                       float(doc["created_at"]), str(doc.get("created_by", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a webhook: {exc!r}") from None


def new_id() -> str:
    return "wh_" + secrets.token_hex(6)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: ``whsec_`` + base64 decoded, or the string's UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be whsec_ followed by base64") from None
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, body: bytes,
            timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"content-type": "application/json", "webhook-id": message_id,
            "webhook-timestamp": str(ts), "webhook-signature": sign(secret, message_id, ts, body),
            "user-agent": "flagedge-webhooks"}


def host_and_port(url: str) -> tuple[str, int]:
    """The URL's host and port; raises UnsafeURL for anything but http(s) with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(f"webhook URL must be http(s)://HOST/...: {url!r}")
    if parts.username or parts.password:
        raise UnsafeURL("webhook URL must not carry credentials (use --secret)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL(f"webhook URL has a bad port: {url!r}") from None
    return parts.hostname, port


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


Resolver = Callable[[str, int], Iterable[str]]


def resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port,
                                                               type=socket.SOCK_STREAM)})


def check_addresses(url: str, addresses: Iterable[str], allow_private: bool) -> None:
    found = list(addresses)
    if not found:
        raise UnsafeURL(f"{url}: the host resolves to no address")
    if allow_private:
        return
    private = [a for a in found if not is_public(a)]
    if private:
        raise UnsafeURL(f"{url} resolves to a private or loopback address "
                        f"({', '.join(private)}): refused (SSRF); --allow-private if meant")


def check_url(url: str, allow_private: bool, resolver: Resolver = resolve) -> None:
    """Refuse (UnsafeURL) unless every address the host resolves to may be called."""
    host, port = host_and_port(url)
    try:
        addresses = list(resolver(host, port))
    except OSError as exc:
        raise UnsafeURL(f"{url}: cannot resolve {host}: {exc}") from None
    check_addresses(url, addresses, allow_private)


# --- Against Redis (the CLI now, the admin API later): authorization is the caller's. -------

def add(client: Any, env: str, url: str, *, fmt: str = "json", secret: str | None = None,
        allow_private: bool = False, created_by: str = "",
        resolver: Resolver = resolve) -> Webhook:
    """Check and store a webhook; returns it (with its secret: shown once)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    secret = new_secret() if secret is None else secret
    secret_bytes(secret)  # refuse a bad whsec_ secret now, not at the first delivery
    check_url(url, allow_private, resolver)
    hook = Webhook(new_id(), env, url, fmt, secret, allow_private, redis_time(client, env),
                   created_by)
    stored.put_webhook(client, env, hook.id, hook.dumps())
    return hook


def list_webhooks(client: Any, env: str) -> list[Webhook]:
    """Oldest first; a stored value that is not a webhook is skipped."""
    out = []
    for raw in stored.read_webhooks(client, env).values():
        try:
            out.append(Webhook.from_json(bytes(raw)))
        except ValueError:
            continue
    return sorted(out, key=lambda h: (h.created_at, h.id))


def remove(client: Any, env: str, hook_id: str) -> None:
    if not stored.remove_webhook(client, env, hook_id):
        raise LookupError(f"no webhook {hook_id} in environment {env}")


def failed(client: Any, env: str, count: int = 100) -> list[dict[str, str]]:
    """Deliveries given up, newest first: webhook, url, entry, webhook_id, type, attempts,
    error, at."""
    out = []
    for entry_id, fields in stored.read_failed(client, env, count):
        out.append({"id": text(entry_id), **{text(k): text(v) for k, v in fields.items()}})
    return out
