"""Bulk-evaluation result cache: (env, epoch, version, canonical context) -> entry.

An entry holds what the bulk endpoint needs to answer without evaluating: the response body
without ``eventStreams`` (which is per key and added afterwards), the digest of the canonical
flag results (the ETag's base) and the exposures to count. A new rules version simply misses
(old entries age out of the LRU). Flag sets reading ``$flagd.timestamp`` are never cached.
In front of it, raw request bodies alias the entries they resolved to (``get_raw``), so a
client repeating a context byte for byte skips the JSON parse and the canonical form.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class CachedResult:
    """One bulk result. ``pending`` counts responses served from it whose exposures are not
    yet added to the metrics (folded in at scrape time: one integer add per request)."""

    __slots__ = ("body_prefix", "digest", "exposures", "pending")

    def __init__(self, body_prefix: bytes, digest: bytes, exposures: tuple[int, ...]):
        self.body_prefix = body_prefix  # b'{"flags":[...],"metadata":{...}' — no closing brace
        self.digest = digest  # hash of the canonical flag results
        self.exposures = exposures  # HotMetrics.exposure_slots of its (flag, variant, reason)s
        self.pending = 0


CacheKey = tuple[str, str, int, bytes]
# (env, epoch, version, content type, raw request body): an alias of a canonical entry.
RawKey = tuple[str, str, int, bytes | None, bytes]


class ResultCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, CachedResult] = OrderedDict()
        # Raw request bodies seen before, pointing at the entries above: a client repeating a
        # context byte for byte is answered without parsing it. Same bound, same LRU order.
        self._raw: OrderedDict[RawKey, CachedResult] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.bypassed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedResult | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: CachedResult) -> None:
        self._put(self._entries, key, entry)

    def get_raw(self, key: RawKey) -> CachedResult | None:
        """A hit counts as a hit; a miss is not counted (the canonical lookup that follows is)."""
        entry = self._raw.get(key)
        if entry is not None:
            self.hits += 1
            self._raw.move_to_end(key)
        return entry

    def put_raw(self, key: RawKey, entry: CachedResult) -> None:
        self._put(self._raw, key, entry)

    def _put(self, entries: OrderedDict[Any, CachedResult], key: Any, entry: CachedResult) -> None:
        if self.max_entries <= 0:
            return
        entries[key] = entry
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def drop_env(self, env: str) -> None:
        """Free the entries of an environment whose rules changed (they can never hit again)."""
        for entries in (self._entries, self._raw):
            stale = [k for k in entries if k[0] == env]
            for k in stale:
                del entries[k]

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
