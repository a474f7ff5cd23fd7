"""Bulk-evaluation result cache: (env, epoch, version, canonical context) -> entry.

An entry holds what the bulk endpoint needs to answer without evaluating: the response body
without ``eventStreams`` (which is per key and added afterwards), the digest of the canonical
flag results (the ETag's base) and the exposures to count. A new rules version simply misses
(old entries age out of the LRU). Flag sets reading ``$flagd.timestamp`` are never cached.
"""

from __future__ import annotations

from collections import OrderedDict


class CachedResult:
    """One bulk result. ``pending`` counts responses served from it whose exposures are not
    yet added to the metrics (folded in at scrape time: one integer add per request)."""

    __slots__ = ("body_prefix", "digest", "exposures", "pending")

    def __init__(self, body_prefix: bytes, digest: bytes,
                 exposures: tuple[tuple[str, str | None, str], ...]):
        self.body_prefix = body_prefix  # b'{"flags":[...],"metadata":{...}' — no closing brace
        self.digest = digest  # hash of the canonical flag results
        self.exposures = exposures  # (flag, variant, reason) per result
        self.pending = 0


CacheKey = tuple[str, str, int, bytes]


class ResultCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, CachedResult] = OrderedDict()
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
        if self.max_entries <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_env(self, env: str) -> None:
        """Free the entries of an environment whose rules changed (they can never hit again)."""
        stale = [k for k in self._entries if k[0] == env]
        for k in stale:
            del self._entries[k]

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
