"""API key CRUD in Redis (create, list, revoke, export), sync, for the CLI and tests.

``flagedge:keys`` is a HASH ``sha256(key)`` -> JSON :class:`~proxy.keys.KeyRecord`; every
write is announced on ``flagedge:events`` so running proxies update their key rings at once.
Write and announcement are one Lua script (KEY_WRITE_LUA), except on a Redis Cluster: there
the two keys live in different slots (renaming them into one would strand every proxy and
CLI already running), so the write comes first and the announcement second, and a proxy's
periodic key re-read (``keys_refresh``) catches an announcement lost between the two.
The raw key is returned by :func:`create` and stored nowhere.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import orjson
import redis.cluster

from proxy.keys import KeyRecord, dump_export, generate_key, hash_key
from proxy.storage import layout
from proxy.storage.replies import text

log = logging.getLogger("flagedge.keys")


def ensure_secret(client: Any) -> None:
    """``flagedge:secret`` signs stream tokens on every replica; created once. The first
    write also stamps ``flagedge:layout`` (SET NX: data written by older code has no stamp
    and reads as layout 1, which it is)."""
    client.set(layout.SECRET, secrets.token_hex(32), nx=True)
    client.set(layout.LAYOUT, layout.LAYOUT_VERSION, nx=True)


def _write(client: Any, op: str, key_hash: str, record: bytes = b"") -> bytes | None:
    """Write (``put``) or delete (``revoked``) one key record and announce it; returns the
    record stored before (None: there was none, and a revoke then did nothing)."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return client.eval(layout.KEY_WRITE_LUA, 3, layout.KEYS, layout.EVENTS, layout.LAYOUT,
                           op, key_hash, record, str(layout.EVENTS_MAXLEN))
    old = client.hget(layout.KEYS, key_hash)
    if op == "put":
        client.hset(layout.KEYS, key_hash, record)
    elif old is None or not client.hdel(layout.KEYS, key_hash):
        return None
    client.xadd(layout.EVENTS, {"type": "key", "op": op, "hash": key_hash},
                maxlen=layout.EVENTS_MAXLEN, approximate=True)
    return old  # type: ignore[no-any-return]


def create(client: Any, env: str, kind: str, name: str,
           rate_limit: float | None = None,
           roles: tuple[str, ...] | None = None) -> tuple[str, KeyRecord]:
    """Create a key; returns (raw key, record). The raw key is not stored anywhere.
    ``roles`` only for admin keys (None: every role); ValueError otherwise."""
    layout.check_env(env)
    if roles is not None and kind != "admin":
        raise ValueError(f"roles are for admin keys; a {kind} key only reads flags")
    api_key = generate_key(kind)
    digest = hash_key(api_key)
    record = KeyRecord(id=digest[:12], env=env, kind=kind, name=name,
                       created_at=round(time.time(), 3), rate_limit=rate_limit, roles=roles)
    ensure_secret(client)
    _write(client, "put", digest, orjson.dumps(record.to_json()))
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
    """Delete the key record and announce it, in one step (see the module docstring)."""
    key_hash = resolve(client, id_or_hash)
    stored = _write(client, "revoked", key_hash)
    if stored is None:  # revoked by someone else since resolve()
        raise LookupError(f"no key with id {id_or_hash!r}")
    return KeyRecord.from_json(key_hash, stored)


def export(client: Any, env: str | None = None) -> bytes:
    """Key hashes and records in the ``--keys FILE`` format (no secrets)."""
    return dump_export(list_keys(client, env))
