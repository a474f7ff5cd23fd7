"""Bulk-evaluation result cache: (env, state id, version, canonical context) -> entry.

An entry holds what the bulk endpoint needs to answer without evaluating: the response body
without ``eventStreams`` (which is per key and added afterwards), the digest of the canonical
flag results (the ETag's base) and the exposures to count. A new rules version simply
misses (the old version's entries are freed a slice at a time after it: ``retire``). Flag
sets whose rules compare ``$flagd.timestamp`` with literal times key their entries on the
interval between two such times as well (the state part of the key is
``FlagSet.stream_id``): an entry is not found after the next boundary, and ages out of the
LRU. Other reads of the clock are never cached.
In front of it, raw request bodies alias the entries they resolved to (``get_raw``), so a
client repeating a context byte for byte skips the JSON parse and the canonical form.

Bounded by bytes (``cache_bytes``) as well as by entries (``cache_size``): an entry of 350
flags holds a ~50 KB body and its key up to a 4 KB context, so a count alone let 10,000 of
them reach ~500 MB. Each key's bytes and each entry's body are accounted once, an integer
add on insert and a subtract on eviction; a hit costs nothing beyond the LRU move.

Admission (``offer``): while the cache has room, every context enters; once it is full, a
context enters the second time it is seen, as with TinyLFU's doorkeeper (Caffeine applies its
admission filter only when admitting means evicting, too). Most contexts a busy proxy sees
once (a new user, a context with a never-repeated attribute some rule reads) would otherwise
each evict an entry that repeats and churn ~3.5 KB of heap per request; measured with wrk on
new users, admitting them all cost ~10 % of CPU per request and ~40 MB of RSS. The
doorkeeper remembers only the keys' hashes, in two generations (``Doorkeeper``), so a
regular arriving at a full cache pays one extra evaluation, once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

# Fixed bytes per stored item beyond its variable parts, measured with tracemalloc (CPython
# 3.11, 64-bit: 5,000 puts of small keys onto one shared entry, then 5,000 distinct entries;
# tests/unit/api/test_cache_bytes.py checks the totals against the heap). KEY_OVERHEAD: the
# key tuple, its bytes object's header, the OrderedDict's slot (~190 B measured) and a raw
# key's own content-type object (~50 B). ENTRY_OVERHEAD: the CachedResult object, its 16-byte
# digest, the headers of its body and exposures tuple (~195 B measured), and the ETag it keeps
# once served (~130 B: a 2-tuple and ~40 bytes of text). Each exposure slot
# adds a pointer (the ints themselves belong to the metrics).
KEY_OVERHEAD = 256
ENTRY_OVERHEAD = 384
POINTER = 8
# A spliced entry (350 flags: ~3 KB): the object, its 16-byte digest, the headers of its
# fragments and exposures tuples, and the ETag it keeps once served (measured as above).
SPLICED_OVERHEAD = 320
# An item larger than this share of the budget is not cached: one entry must not evict
# dozens of others (and such contexts rarely repeat).
MAX_ITEM_SHARE = 16


class Layout:
    """The parts a flag set's bulk bodies share in one environment (built by
    ``proxy.api.bulk_body``): ``segments``, the static flags' items already joined with the
    body's head, commas and metadata, which alternate with an entry's fragments (the dynamic
    flags' items, in output order) and end with the response's tail. ``order`` puts the
    dynamic flags' items from the plan's order into output order (once per entry). Its static
    flags' exposures are counted once per metrics fold for every response served from its
    entries (``pending``)."""

    __slots__ = ("digest", "order", "pending", "segments", "slots", "template")

    def __init__(self, segments: tuple[bytes, ...], order: Any, slots: tuple[int, ...],
                 digest: int):
        self.segments = segments
        self.order = order  # dynamic fragments, plan order -> output order
        self.slots = slots  # the static flags' exposure slots
        self.digest = digest  # the static items' and the metadata's share of the digest
        self.pending = 0
        # segment, fragment, segment, ..., segment, tail: filled by slice assignment in C
        self.template: list[bytes] = [b""] * (2 * len(segments))
        self.template[0::2] = segments

    def patched(self, segments: dict[int, bytes], slots: tuple[int, ...], digest: int
                ) -> Layout:
        """This layout with the segments at ``segments``' indices replaced (a new version
        that changed some static flags: the same shape, so the template is copied, not
        built again)."""
        layout = Layout.__new__(Layout)
        parts = list(self.segments)
        template = self.template.copy()
        for i, segment in segments.items():
            parts[i] = template[2 * i] = segment
        layout.segments, layout.order, layout.slots = tuple(parts), self.order, slots
        layout.digest, layout.pending, layout.template = digest, 0, template
        return layout

    def join(self, fragments: tuple[bytes, ...], tail: bytes) -> bytes:
        parts = self.template.copy()
        parts[1:-1:2] = fragments
        parts[-1] = tail
        return b"".join(parts)


def _whole(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return parts


# The layout of an entry holding its whole body (as its one fragment): nothing shared.
WHOLE = Layout((b"", b""), _whole, (), 0)


class CachedResult:
    """One bulk result: its fragments (the dynamic flags' items as JSON, shared with every
    other entry that has them) within a Layout, so an entry of 350 flags holds ~3 KB of
    pointers, not a ~38 KB body. ``pending`` counts responses served from it whose exposures
    are not yet added to the metrics (folded in at scrape time: one integer add per request).
    ``refs`` counts the ResultCache slots (canonical or alias) holding it, so it is
    accounted once however many aliases point at it."""

    __slots__ = ("_etag", "digest", "exposures", "fragments", "layout", "nbytes", "pending",
                 "refs")

    def __init__(self, body_prefix: bytes, digest: bytes, exposures: tuple[int, ...]):
        """An entry holding its whole body: b'{"flags":[...],"metadata":{...}' (no closing
        brace); ``exposures``: every flag's slot."""
        self.fragments = (body_prefix,)
        self.layout = WHOLE
        self.digest = digest  # hash of the canonical flag results
        self.exposures = exposures  # HotMetrics.exposure_slots of its (flag, variant, reason)s
        self.pending = 0
        self.refs = 0
        # Approximate heap bytes of this result (body, exposures, the object itself).
        self.nbytes = len(body_prefix) + POINTER * len(exposures) + ENTRY_OVERHEAD
        self._etag: tuple[int | None, bytes] | None = None

    @classmethod
    def spliced(cls, layout: Layout, fragments: tuple[bytes, ...], digest: bytes,
                exposures: tuple[int, ...], own_bytes: int = 0) -> CachedResult:
        """An entry of ``layout``'s flag set: ``fragments`` and ``exposures`` are the dynamic
        flags' (the static ones' are the layout's); ``own_bytes``: fragments no other entry
        shares (errors, built per request)."""
        entry = cls.__new__(cls)
        entry.fragments = fragments
        entry.layout = layout
        entry.digest = digest
        entry.exposures = exposures
        entry.pending = 0
        entry.refs = 0
        entry.nbytes = (POINTER * (len(fragments) + len(exposures)) + SPLICED_OVERHEAD
                        + own_bytes)
        entry._etag = None
        return entry

    def body(self, tail: bytes) -> bytes:
        """The response body: the entry's, then ``tail`` (``,"eventStreams":[...]}``)."""
        return self.layout.join(self.fragments, tail)

    @property
    def body_prefix(self) -> bytes:
        """The body without ``eventStreams`` and the closing brace."""
        return self.body(b"")

    def etag(self, window: int | None) -> bytes:
        """The ETag of a response served from this result: its digest, and the stream token
        window when tokens are on (the body names the token). The last one is kept: it is the
        same for every request of a window."""
        held = self._etag
        if held is not None and held[0] == window:
            return held[1]
        tag = self.digest.hex() if window is None else f"{self.digest.hex()}-{window}"
        etag = f'"{tag}"'.encode()
        self._etag = (window, etag)
        return etag


# (env, state id (with the interval for time-stepped rules), version, canonical context)
CacheKey = tuple[str, str, int, bytes]
# (env, state id, version, content type, raw request body): an alias of a canonical entry.
RawKey = tuple[str, str, int, bytes | None, bytes]


def key_bytes(key: CacheKey | RawKey) -> int:
    """The bytes a key holds: its context (or raw body and content type) and fixed overhead.
    The env, state id and version objects are shared with the flag set."""
    if len(key) == 4:
        return len(key[3]) + KEY_OVERHEAD  # type: ignore[arg-type]  # canonical context
    ctype = key[3]
    return len(key[4]) + (len(ctype) if ctype is not None else 0) + KEY_OVERHEAD  # type: ignore[misc, arg-type]


REAP_SLICE = 256  # keys looked at between two looks at the clock


def _dead(key: CacheKey | RawKey, live: tuple[int, str] | None) -> bool:
    """A key of a retired environment: not of its live version and state (a time-stepped
    set's keys carry the interval after the state id: ``FlagSet.stream_id``)."""
    return live is None or key[2] != live[0] or not key[1].startswith(live[1])


def _unref(key: CacheKey | RawKey, entry: CachedResult) -> int:
    """The bytes freed by dropping ``key`` (its entry's too if no other key holds it)."""
    refs = entry.refs = entry.refs - 1
    return key_bytes(key) + (entry.nbytes if refs == 0 else 0)


class Doorkeeper:
    """The hashes of keys seen recently: ``seen_before(key)`` is True when ``key`` was offered
    within about the last ``bound`` to ``2 * bound`` distinct offers. Two generations of
    ``bound`` hashes each (~40 B a hash): a full young set becomes the old one. A hash
    collision only admits a key early, which costs nothing but a slot."""

    __slots__ = ("_bound", "_old", "_young")

    def __init__(self, bound: int):
        self._bound = max(1, bound)
        self._young: set[int] = set()
        self._old: set[int] = set()

    def seen_before(self, key: object) -> bool:
        h = hash(key)
        if h in self._young or h in self._old:
            return True
        if len(self._young) >= self._bound:
            self._old, self._young = self._young, set()
        self._young.add(h)
        return False


class ResultCache:
    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024):
        self.max_entries = max_entries  # per dict (canonical entries, aliases); 0 = off
        self.max_bytes = max_bytes  # both dicts together, keys and bodies; 0 = off
        self._entries: OrderedDict[CacheKey, CachedResult] = OrderedDict()
        # Raw request bodies seen before, pointing at the entries above: a client repeating a
        # context byte for byte is answered without parsing it. Same bounds, same LRU order.
        self._raw: OrderedDict[RawKey, CachedResult] = OrderedDict()
        self.bytes = 0  # accounted bytes held: keys of both dicts, each entry's body once
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.doorkeeper = Doorkeeper(max_entries)
        # Environments whose older entries are being freed (``retire``/``reap``): env -> the
        # (version, state id) whose entries stay; the keys the pass has yet to look at.
        self._retired: dict[str, tuple[int, str] | None] = {}
        self._scan: list[CacheKey | RawKey] | None = None
        self._another_pass = False

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

    def offer(self, key: CacheKey, entry: CachedResult) -> bool:
        """``put`` while there is room, else if ``key`` was offered before (see the module
        docstring); True if it was put."""
        room = (len(self._entries) < self.max_entries
                and self.bytes + entry.nbytes + key_bytes(key) <= self.max_bytes)
        if room or self.doorkeeper.seen_before(key):
            self.put(key, entry)
            return True
        return False

    def put(self, key: CacheKey, entry: CachedResult) -> None:
        self._put(self._entries, key, key_bytes(key), entry, False)

    def get_raw(self, key: RawKey) -> CachedResult | None:
        """A hit counts as a hit; a miss is not counted (the canonical lookup that follows is)."""
        entry = self._raw.get(key)
        if entry is not None:
            self.hits += 1
            self._raw.move_to_end(key)
        return entry

    def put_raw(self, key: RawKey, entry: CachedResult) -> None:
        self._put(self._raw, key, key_bytes(key), entry, True)

    def _put(self, entries: OrderedDict[Any, CachedResult], key: Any, size: int,
             entry: CachedResult, raw: bool) -> None:
        """Insert with ``size`` the key's bytes: integer adds, and evictions past a bound.
        In steady state every unique context evicts one item of the same dict, so that case
        is inline (a function call costs more than the accounting)."""
        nbytes = entry.nbytes
        if self.max_entries <= 0 or (size + nbytes) * MAX_ITEM_SHARE > self.max_bytes:
            return  # off (either bound 0), or one item would crowd out many
        if key in entries:  # not expected (a put follows a miss); stay exact anyway
            self.bytes -= _unref(key, entries.pop(key))
        entries[key] = entry
        refs = entry.refs
        entry.refs = refs + 1
        total = self.bytes + (size + nbytes if refs == 0 else size)
        # Past a bound, the dict holding more items gives up its least recently used (each
        # keeps its own LRU order: an alias hit does not refresh its canonical entry).
        other = self._entries if raw else self._raw
        while len(entries) > self.max_entries or total > self.max_bytes:
            if len(entries) > self.max_entries or not other or len(entries) >= len(other):
                k, old = entries.popitem(last=False)
                refs = old.refs = old.refs - 1
                ctype = k[3]
                total -= (len(k[4]) + (len(ctype) if ctype is not None else 0) if raw
                          else len(ctype)) + KEY_OVERHEAD + (old.nbytes if refs == 0 else 0)
            else:
                total -= _unref(*other.popitem(last=False))
        self.bytes = total

    def drop_raw(self) -> None:
        """Forget every raw-body alias (their entries stay, reachable by canonical key)."""
        while self._raw:
            self.bytes -= _unref(*self._raw.popitem(last=False))

    def drop_env(self, env: str) -> None:
        """Free every entry of ``env`` at once (tools and tests; the server retires)."""
        for entries in (self._entries, self._raw):
            stale = [k for k in entries if k[0] == env]
            for k in stale:
                self.bytes -= _unref(k, entries.pop(k))

    def retire(self, env: str, live: tuple[int, str] | None) -> None:
        """``env``'s entries other than those of ``live`` (version, state id) can never hit
        again (their keys hold the old state): ``reap`` frees them, a slice at a time.
        Dropping a full cache's 10,000 entries at once held the event loop for 12-17 ms
        on every change to a busy environment. None: every entry of ``env`` (it was removed).
        A retire during a pass asks for another pass (the entries put since are dead too)."""
        self._retired[env] = live
        self._another_pass = self._scan is not None

    def reap(self, budget_s: float) -> bool:
        """Free retired entries for about ``budget_s`` seconds (at least one slice of
        REAP_SLICE keys); True while some are left to look at."""
        if not self._retired:
            return False
        if self._scan is None:
            # The keys, copied from the dicts' own tables: ~10x faster than walking the
            # OrderedDicts' links (1.4 ms for 20,000), and the order does not matter here.
            self._scan = [*dict.keys(self._entries), *dict.keys(self._raw)]
        scan, retired, deadline = self._scan, self._retired, time.perf_counter() + budget_s
        while scan:
            # Taken off the copy as they are looked at, so each slice frees the keys it
            # drops (the copy freed at the end of a pass took 20,000 keys with it at once).
            chunk = scan[-REAP_SLICE:]
            del scan[-REAP_SLICE:]
            for k in chunk:
                if k[0] in retired and _dead(k, retired[k[0]]):
                    entries = self._raw if len(k) == 5 else self._entries
                    entry = entries.pop(k, None)
                    if entry is not None:  # (not evicted meanwhile)
                        self.bytes -= _unref(k, entry)
            del chunk
            if time.perf_counter() >= deadline:
                return True
        self._scan = None
        if self._another_pass:
            self._another_pass = False
            return True
        self._retired.clear()
        return False

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
