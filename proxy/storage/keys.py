"""API key CRUD in Redis (create, list, revoke, export), sync, for the CLI and tests.

``flagedge:keys`` is a HASH ``sha256(key)`` -> JSON :class:`~proxy.keys.KeyRecord`; every
write is announced on ``flagedge:events`` so running proxies update their key rings at once.
The raw key is returned by :func:`create` and stored nowhere.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.keys import KeyRecord, dump_export, generate_key, hash_key
from proxy.storage import layout
from proxy.storage.replies import text

log = logging.getLogger("flagedge.keys")


def ensure_secret(client: Any) -> None:
    """``flagedge:secret`` signs stream tokens on every replica; created once."""
    client.set(layout.SECRET, secrets.token_hex(32), nx=True)


def _announce(client: Any, op: str, key_hash: str) -> None:
    client.xadd(layout.EVENTS, {"type": "key", "op": op, "hash": key_hash},
                maxlen=layout.EVENTS_MAXLEN, approximate=True)


def create(client: Any, env: str, kind: str, name: str,
           rate_limit: float | None = None) -> tuple[str, KeyRecord]:
    """Create a key; returns (raw key, record). The raw key is not stored anywhere."""
    layout.check_env(env)
    api_key = generate_key(kind)
    digest = hash_key(api_key)
    record = KeyRecord(id=digest[:12], env=env, kind=kind, name=name,
                       created_at=round(time.time(), 3), rate_limit=rate_limit)
    ensure_secret(client)
    client.hset(layout.KEYS, digest, orjson.dumps(record.to_json()))
    _announce(client, "put", digest)
    return api_key, record


def records_from_redis(items: Iterable[tuple[Any, Any]]) -> dict[str, KeyRecord]:
    """HGETALL pairs -> records, skipping (and logging) malformed ones."""
    out: dict[str, KeyRecord] = {}
    for field, value in items:
        key_hash = text(field)
        try:
            out[key_hash] = KeyRecord.from_json(key_hash, value)
        except ValueError as exc:
            log.warning("ignoring bad key record id=%s: %s", key_hash[:12], exc)
    return out


def list_keys(client: Any, env: str | None = None) -> dict[str, KeyRecord]:
    """Every valid key record (of ``env``, if given), by hash."""
    records = records_from_redis(client.hgetall(layout.KEYS).items())
    return {key_hash: record for key_hash, record in records.items()
            if env is None or record.env == env}


def resolve(client: Any, id_or_hash: str) -> str:
    """The full hash for a key id (12-hex prefix) or hash. Raises LookupError."""
    matches = [h for h in list_keys(client) if h.startswith(id_or_hash.lower())]
    if not id_or_hash or not matches:
        raise LookupError(f"no key with id {id_or_hash!r}")
    if len(matches) > 1:
        raise LookupError(f"key id {id_or_hash!r} is ambiguous ({len(matches)} keys)")
    return matches[0]


def revoke(client: Any, id_or_hash: str) -> KeyRecord:
    key_hash = resolve(client, id_or_hash)
    stored = client.hget(layout.KEYS, key_hash)
    client.hdel(layout.KEYS, key_hash)
    _announce(client, "revoked", key_hash)
    return KeyRecord.from_json(key_hash, stored)


def export(client: Any, env: str | None = None) -> bytes:
    """Key hashes and records in the ``--keys FILE`` format (no secrets)."""
    return dump_export(list_keys(client, env))
