"""API keys: generation, hashing, the in-memory key ring, and the Redis CRUD used by the CLI.

Redis holds only ``sha256(key)`` (``flagedge:keys`` HASH hash -> JSON record); the raw key is
printed once by ``flagedge keys create`` and never stored. Running proxies keep a
:class:`KeyRing` in memory, filled from Redis (and kept current through
``flagedge:events``) or from a ``--keys FILE`` written by ``flagedge keys export``.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.storage import layout

log = logging.getLogger("flagedge.keys")

KINDS = ("client", "server", "admin")
PREFIXES = {"client": "fe_client_", "server": "fe_server_", "admin": "fe_admin_"}
EXPORT_FORMAT = 1


def hash_key(raw: str) -> str:
    """sha256 hex of the raw key: what Redis and key files store."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key(kind: str) -> str:
    """A new random key (32 random bytes, URL-safe) with a prefix naming its kind, so a
    leaked key is recognisable by secret scanners and people."""
    if kind not in PREFIXES:
        raise ValueError(f"unknown key kind {kind!r}: use one of {', '.join(KINDS)}")
    return PREFIXES[kind] + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # first 12 hex of the hash: safe to log and show
    env: str
    kind: str  # client | server | admin
    name: str
    created_at: float
    rate_limit: float | None = None  # requests per second, per worker

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "env": self.env, "kind": self.kind, "name": self.name, "created_at": self.created_at,
        }
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        return out

    @classmethod
    def from_json(cls, key_hash: str, data: Mapping[str, Any] | bytes | str) -> KeyRecord:
        if isinstance(data, bytes | str):
            data = orjson.loads(data)
        if not isinstance(data, Mapping):
            raise ValueError("key record must be a JSON object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"key record has unknown kind {kind!r}")
        env = data.get("env")
        if not isinstance(env, str) or not env:
            raise ValueError("key record needs a string env")
        rate = data.get("rate_limit")
        if rate is not None and (not isinstance(rate, int | float) or isinstance(rate, bool)
                                 or rate <= 0):
            raise ValueError("key record rate_limit must be a positive number")
        return cls(
            id=key_hash[:12], env=env, kind=kind, name=str(data.get("name", "")),
            created_at=float(data.get("created_at", 0.0)),
            rate_limit=float(rate) if rate is not None else None,
        )


KeyCallback = Callable[[KeyRecord], None]


class KeyRing:
    """In-memory hash -> record map. ``lookup`` is on the hot path: one sha256 and a dict
    lookup; the final compare is constant-time."""

    def __init__(self) -> None:
        self._by_hash: dict[str, KeyRecord] = {}
        self._subscribers: list[KeyCallback] = []
        self.loaded = False  # filled at least once (from Redis or a file)

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, raw_key: str) -> KeyRecord | None:
        if not raw_key:
            return None
        digest = hash_key(raw_key)
        # The dict is keyed by the digest, not the secret, so its lookup leaks nothing
        # useful; the explicit compare keeps the final check constant-time regardless.
        record = self._by_hash.get(digest)
        if record is not None and hmac.compare_digest(record.id, digest[:12]):
            return record
        return None

    def records(self) -> dict[str, KeyRecord]:
        return dict(self._by_hash)

    def replace_all(self, records: Mapping[str, KeyRecord]) -> None:
        old = self._by_hash
        self._by_hash = dict(records)
        self.loaded = True
        for h, rec in old.items():
            if self._by_hash.get(h) != rec:
                self._notify(rec)

    def put(self, key_hash: str, record: KeyRecord) -> None:
        old = self._by_hash.get(key_hash)
        self._by_hash = {**self._by_hash, key_hash: record}
        if old is not None and old != record:
            self._notify(old)

    def remove(self, key_hash: str) -> KeyRecord | None:
        if key_hash not in self._by_hash:
            return None
        new = dict(self._by_hash)
        old = new.pop(key_hash)
        self._by_hash = new
        self._notify(old)
        return old

    def subscribe(self, callback: KeyCallback) -> Callable[[], None]:
        """``callback(record)`` runs when a key is revoked or changed (close its streams)."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, record: KeyRecord) -> None:
        for cb in tuple(self._subscribers):
            try:
                cb(record)
            except Exception:
                log.exception("key ring subscriber failed")

    def load_file(self, path: Path | str) -> int:
        """Load a ``flagedge keys export`` file (hashes only). Returns the number of keys;
        raises ValueError naming the file and entry on bad content."""
        self.replace_all(parse_export(Path(path).read_bytes(), source=str(path)))
        return len(self._by_hash)


# -- export format -------------------------------------------------------------------------
def dump_export(records: Mapping[str, KeyRecord]) -> bytes:
    doc = {
        "format": EXPORT_FORMAT,
        "keys": [{"hash": h, **records[h].to_json()} for h in sorted(records)],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def parse_export(data: bytes, source: str = "<keys>") -> dict[str, KeyRecord]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), builtins.list):
        raise ValueError(f"{source}: expected an object with a 'keys' list (flagedge keys export)")
    out: dict[str, KeyRecord] = {}
    for i, item in enumerate(doc["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object")
        h = item.get("hash")
        if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ValueError(f"{where}.hash: must be a sha256 hex digest")
        try:
            out[h] = KeyRecord.from_json(h, item)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return out


# -- Redis CRUD (sync, for the CLI) ---------------------------------------------------------
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
    raw = generate_key(kind)
    digest = hash_key(raw)
    record = KeyRecord(id=digest[:12], env=env, kind=kind, name=name,
                       created_at=round(time.time(), 3), rate_limit=rate_limit)
    ensure_secret(client)
    client.hset(layout.KEYS, digest, orjson.dumps(record.to_json()))
    _announce(client, "put", digest)
    return raw, record


def list_keys(client: Any, env: str | None = None) -> dict[str, KeyRecord]:
    out: dict[str, KeyRecord] = {}
    for h, raw in client.hgetall(layout.KEYS).items():
        key_hash = h.decode() if isinstance(h, bytes) else h
        try:
            rec = KeyRecord.from_json(key_hash, raw)
        except ValueError as exc:
            log.warning("ignoring bad key record id=%s: %s", key_hash[:12], exc)
            continue
        if env is None or rec.env == env:
            out[key_hash] = rec
    return out


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
    raw = client.hget(layout.KEYS, key_hash)
    client.hdel(layout.KEYS, key_hash)
    _announce(client, "revoked", key_hash)
    return KeyRecord.from_json(key_hash, raw)


def export(client: Any, env: str | None = None) -> bytes:
    return dump_export(list_keys(client, env))


def records_from_redis(items: Iterable[tuple[Any, Any]]) -> dict[str, KeyRecord]:
    """HGETALL pairs -> records, skipping (and logging) malformed ones."""
    out: dict[str, KeyRecord] = {}
    for h, raw in items:
        key_hash = h.decode() if isinstance(h, bytes) else h
        try:
            out[key_hash] = KeyRecord.from_json(key_hash, raw)
        except ValueError as exc:
            log.warning("ignoring bad key record id=%s: %s", key_hash[:12], exc)
    return out


# The CLI-facing name (`keys list`). It shadows the builtin in this module, hence
# `builtins.list` above.
list = list_keys
