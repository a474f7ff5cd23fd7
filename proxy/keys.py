"""API keys without network I/O: hashing, :class:`KeyRecord`, kinds, the in-memory
:class:`KeyRing` and :func:`identify` (which key is this?). The one read is
:meth:`KeyRing.load_file`, of the ``--keys FILE`` an operator names.

Redis holds only ``sha256(key)`` (``flagedge:keys`` HASH hash -> JSON record); the raw key is
printed once by ``flagedge keys create`` and never stored. Running proxies keep a
:class:`KeyRing` in memory, filled from Redis (and kept current through ``flagedge:events``,
see ``proxy.storage.keys`` for the CRUD) or from a ``--keys FILE`` written by
``flagedge keys export``. The HTTP answers (401/403/429) live in ``proxy.api.auth``; the
decisions here are shared with every surface that takes a key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("flagedge.keys")

KINDS = ("client", "server", "admin")  # least to most powerful
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
PREFIXES = {"client": "fe_client_", "server": "fe_server_", "admin": "fe_admin_"}
EXPORT_FORMAT = 1
# Roles of admin keys (DESIGN §10); a key's ``name`` is the person. What each role allows is
# decided in one place, ``proxy.release.authorization``.
ROLES = ("view", "propose", "approve", "kill", "manage")


def hash_key(api_key: str) -> str:
    """sha256 hex of the raw key: what Redis and key files store."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def generate_key(kind: str) -> str:
    """A new random key (32 random bytes, URL-safe) with a prefix naming its kind, so a
    leaked key is recognisable by secret scanners and people."""
    if kind not in PREFIXES:
        raise ValueError(f"unknown key kind {kind!r}: use one of {', '.join(KINDS)}")
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def kind_allows(kind: str, need: str) -> bool:
    """May a key of ``kind`` do what needs ``need``? (client < server < admin; an unknown
    kind may do nothing.)"""
    return _RANK.get(kind, -1) >= _RANK[need]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # first 12 hex of the hash: safe to log and show
    env: str
    kind: str  # client | server | admin
    name: str
    created_at: float
    rate_limit: float | None = None  # requests per second, per worker
    # Admin keys only. None: a key created before roles existed (or without --roles): it holds
    # every role, as admin keys always did (back-compatible). See :attr:`effective_roles`.
    roles: tuple[str, ...] | None = None

    @property
    def effective_roles(self) -> frozenset[str]:
        """The roles this key holds: its listed ones; every role for an admin key without a
        list; none for client and server keys (they read flags, never write)."""
        if self.kind != "admin":
            return frozenset()
        return frozenset(ROLES if self.roles is None else self.roles)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "env": self.env, "kind": self.kind, "name": self.name, "created_at": self.created_at,
        }
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        if self.roles is not None:
            out["roles"] = list(self.roles)
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
            roles=_stored_roles(data.get("roles")),
        )


def parse_roles(text: str) -> tuple[str, ...]:
    """``"propose,approve"`` -> ``("approve", "propose")`` (sorted, distinct); raises
    ValueError naming an unknown role. An empty list is refused: a key with no role can do
    nothing an admin key is for (use a server key to read)."""
    names = tuple(sorted({part.strip() for part in text.split(",") if part.strip()}))
    unknown = [n for n in names if n not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r}: use {', '.join(ROLES)}")
    if not names:
        raise ValueError(f"--roles needs at least one of {', '.join(ROLES)}")
    return names


def _stored_roles(raw: Any) -> tuple[str, ...] | None:
    """A stored ``roles`` list; a role this flagedge does not know (a newer one) is dropped:
    the key keeps the roles it can be checked for, never more."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise ValueError("key record roles must be a list of role names")
    return tuple(sorted({r for r in raw if r in ROLES}))


KeyCallback = Callable[[KeyRecord], None]


class KeyRing:
    """In-memory hash -> record map. ``lookup`` is on the hot path: one sha256 and a dict
    lookup; the final compare is constant-time."""

    def __init__(self) -> None:
        self._by_hash: dict[str, KeyRecord] = {}
        # key id -> record, for stream tokens (they name the key by id): built on first use
        # after any change, so a revocation is seen by the next token check.
        self._by_id: dict[str, KeyRecord] | None = None
        self._subscribers: list[KeyCallback] = []
        self.loaded = False  # filled at least once (from Redis or a file)

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, api_key: str) -> KeyRecord | None:
        if not api_key:
            return None
        digest = hash_key(api_key)
        # The dict is keyed by the digest, not the secret, so its lookup leaks nothing
        # useful; the explicit compare keeps the final check constant-time regardless.
        record = self._by_hash.get(digest)
        if record is not None and hmac.compare_digest(record.id, digest[:12]):
            return record
        return None

    def by_id(self, key_id: str) -> KeyRecord | None:
        """The live key with this id (12 hex), None if there is none (never was, or revoked).
        O(keys) once after each change, a dict lookup after that."""
        index = self._by_id
        if index is None:
            index = self._by_id = {record.id: record for record in self._by_hash.values()}
        return index.get(key_id)

    def records(self) -> dict[str, KeyRecord]:
        return dict(self._by_hash)

    def replace_all(self, records: Mapping[str, KeyRecord]) -> None:
        old = self._by_hash
        self._by_hash, self._by_id = dict(records), None
        self.loaded = True
        for key_hash, record in old.items():
            if self._by_hash.get(key_hash) != record:
                self._notify(record)

    def put(self, key_hash: str, record: KeyRecord) -> None:
        old = self._by_hash.get(key_hash)
        self._by_hash, self._by_id = {**self._by_hash, key_hash: record}, None
        if old is not None and old != record:
            self._notify(old)

    def remove(self, key_hash: str) -> KeyRecord | None:
        if key_hash not in self._by_hash:
            return None
        new = dict(self._by_hash)
        old = new.pop(key_hash)
        self._by_hash, self._by_id = new, None
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
        for callback in tuple(self._subscribers):
            try:
                callback(record)
            except Exception:
                log.exception("key ring subscriber failed")

    def load_file(self, path: Path | str) -> int:
        """Load a ``flagedge keys export`` file (hashes only). Returns the number of keys;
        raises ValueError naming the file and entry on bad content."""
        self.replace_all(parse_export(Path(path).read_bytes(), source=str(path)))
        return len(self._by_hash)


# -- who is calling ------------------------------------------------------------------------
class Refusal(enum.Enum):
    """Why a key does not identify anyone."""

    #: The ring was never filled (key source unreachable): a valid key cannot be told from a
    #: bad one yet, so callers should retry rather than give up.
    NOT_LOADED = "not loaded"
    #: No such key: never created, or revoked.
    UNKNOWN = "unknown"


def identify(ring: KeyRing | None, api_key: str) -> KeyRecord | Refusal:
    """The key a caller presented: its record (env, kind, rate limit), or why there is none.
    No ring at all means no key is valid."""
    record = ring.lookup(api_key) if ring is not None else None
    if record is not None:
        return record
    return Refusal.UNKNOWN if keys_loaded(ring) else Refusal.NOT_LOADED


def keys_loaded(ring: KeyRing | None) -> bool:
    """Can the ring tell a valid key from a bad one? (Trivially yes without a ring.)"""
    return ring is None or ring.loaded


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
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{source}: expected an object with a 'keys' list (flagedge keys export)")
    out: dict[str, KeyRecord] = {}
    for i, item in enumerate(doc["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object")
        key_hash = item.get("hash")
        if (not isinstance(key_hash, str) or len(key_hash) != 64
                or any(c not in "0123456789abcdef" for c in key_hash)):
            raise ValueError(f"{where}.hash: must be a sha256 hex digest")
        try:
            out[key_hash] = KeyRecord.from_json(key_hash, item)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return out
