"""Bulk response bodies: a flag set's evaluation results as OFREP JSON, serialised once.

The compiler precomputes each flag's results (its static result, one per variant), so a
bulk body is a join of bytes serialised the first time a result is seen. Two memos:

- per environment, across versions: result -> (JSON bytes, exposure slot). A change
  recompiles only the flags it touches and the others keep their Flag objects, hence their
  results, so a new version serialises only what changed. (Serialising every flag again on
  each version cost ~50 us for 50 flags, on nearly every bulk request at 100 changes/s.)
  Generational: when the young dict outgrows its bound it becomes the old one and lookups
  promote from there, so results of replaced flags are gone two generations later.
- per flag set: outcome vector (the ids of the results, in document order) -> body. Many
  contexts share one vector. Bounded by bytes over all environments (``bodies_bytes``), LRU
  within a flag set: with fractional flags nearly every context has a vector of its own, and
  a count bound (20,000 per environment) let 350-flag bodies reach ~1 GB per worker.

Numbers: JSON has one number type but the Python OFREP provider checks
``isinstance(value, float)`` for ``get_float_value``. A number flag with any non-integer
variant is a float flag, so all its values are sent as floats (``1`` -> ``1.0``); a flag
whose variants are all integers is sent as integers (so ``get_integer_value`` works), and a
variant written as ``2.0`` in the document stays ``2.0``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

from proxy.api.cache import MAX_ITEM_SHARE, CachedResult
from proxy.api.metrics import HotMetrics
from proxy.config import Settings
from proxy.model import EvaluationResult, Flag, FlagSet, VariantType

_SORT = orjson.OPT_SORT_KEYS
# Bytes a memoised vector holds beyond its body, measured with tracemalloc (CPython 3.11,
# 64-bit, 3,000 unique contexts over bench/memory.py's 350 flags; tests/unit/api/
# test_cache_bytes.py checks the totals against the heap): ~56 B per flag (the vector's slot
# and its id, an int object of 32 bytes; the slot in the kept ``results`` list; the exposure
# slot) and ~480 B per vector (the tuples' and list's headers, the OrderedDict's slot, the
# CachedResult); rounded up.
VECTOR_PER_FLAG = 64
VECTOR_OVERHEAD = 512
MIN_ITEMS_BOUND = 1024  # young generation of serialised results: at least this, or 4 per flag


def _is_float_flag(flag: Flag | None) -> bool:
    return (flag is not None and flag.variant_type is VariantType.NUMBER
            and any(type(v) is float for v in flag.variants.values()))


def ofrep_item(result: EvaluationResult, flag: Flag | None) -> dict[str, Any]:
    item = result.to_ofrep()
    value = item.get("value")
    if type(value) is int and _is_float_flag(flag):
        item["value"] = float(value)
    return item


def exposure(result: EvaluationResult) -> tuple[str, str | None, str]:
    if result.error_code is not None:
        return (result.key, None, "ERROR")
    return (result.key, result.variant, result.reason.value)


# (result, its OFREP item as JSON, its exposure counter slot). Holding ``result`` keeps its
# id, the memo's key, from being reused by another object.
_Item = tuple[EvaluationResult, bytes, int]


class _Items:
    __slots__ = ("old", "young")

    def __init__(self) -> None:
        self.young: dict[int, _Item] = {}
        self.old: dict[int, _Item] = {}

    def promote(self, result: EvaluationResult, bound: int) -> _Item | None:
        """After a miss in ``young`` (looked up inline by the caller: it is the hot path)."""
        hit = self.old.get(id(result))
        if hit is not None:
            self.put(hit, bound)  # still in use
        return hit

    def put(self, item: _Item, bound: int) -> None:
        if len(self.young) >= bound:
            self.old, self.young = self.young, {}
        self.young[id(item[0])] = item


class _SetMemo:
    """Per flag set: the canonical (key-sorted) output order, serialised metadata, bodies by
    outcome vector."""

    __slots__ = ("bound", "bytes", "flag_set", "metadata", "order", "vectors")

    def __init__(self, flag_set: FlagSet):
        self.flag_set = flag_set
        keys = list(flag_set.flags)
        self.order = sorted(range(len(keys)), key=keys.__getitem__)
        self.metadata = orjson.dumps(dict(flag_set.metadata), option=_SORT)
        self.bound = max(MIN_ITEMS_BOUND, 4 * len(keys))
        # The memo holds each vector's ``results``, so the ids in its keys stay unique.
        self.vectors: OrderedDict[tuple[int, ...], tuple[CachedResult, list[EvaluationResult]]]
        self.vectors = OrderedDict()
        self.bytes = 0  # accounted bytes of ``vectors``


def vector_bytes(entry: CachedResult, n: int) -> int:
    """Approximate heap bytes of one memoised vector of ``n`` results and its body."""
    return len(entry.body_prefix) + VECTOR_PER_FLAG * n + VECTOR_OVERHEAD


class BulkBodies:
    def __init__(self, metrics: HotMetrics, max_bytes: int = Settings().bodies_bytes):
        self.hot = metrics
        self.max_bytes = max_bytes  # all environments' vectors together; 0 = no memo
        self.bytes = 0
        self._sets: dict[str, _SetMemo] = {}
        self._items: dict[str, _Items] = {}
        metrics.held["bulk_bodies"] = self.held

    def held(self) -> int:
        return self.bytes

    def drop_env(self, env: str) -> None:
        """Forget a removed environment."""
        self._forget_bodies(env)
        self._items.pop(env, None)

    def _forget_bodies(self, env: str) -> None:
        memo = self._sets.pop(env, None)
        if memo is not None:
            self.bytes -= memo.bytes

    def _remember(self, memo: _SetMemo, vector: tuple[int, ...], entry: CachedResult,
                  results: list[EvaluationResult]) -> None:
        size = vector_bytes(entry, len(vector))
        if size > self.max_bytes // MAX_ITEM_SHARE:
            return
        memo.vectors[vector] = (entry, results)
        memo.bytes += size
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._evict_one(memo)

    def _evict_one(self, memo: _SetMemo) -> None:
        """The least recently used vector of ``memo`` when it holds at least its fair share of
        the bytes, else of the environment holding the most (LRU within a flag set; the fair
        share keeps a busy environment from starving a quiet one)."""
        if memo.bytes * len(self._sets) < self.bytes:
            memo = max(self._sets.values(), key=lambda m: m.bytes)
        vector, (entry, _results) = memo.vectors.popitem(last=False)
        size = vector_bytes(entry, len(vector))
        memo.bytes -= size
        self.bytes -= size

    def body(self, env: str, flag_set: FlagSet, results: list[EvaluationResult]) -> CachedResult:
        """The body of ``evaluate_all(flag_set, ...)``'s results (without ``eventStreams``)."""
        memo = self._sets.get(env)
        if memo is None or memo.flag_set is not flag_set:
            self._forget_bodies(env)  # an older flag set's: never asked for again
            memo = self._sets[env] = _SetMemo(flag_set)
        vector = tuple(map(id, results))
        known = memo.vectors.get(vector)
        if known is not None:
            memo.vectors.move_to_end(vector)
            return known[0]
        if len(results) != len(memo.order):  # never expected; stay correct anyway
            results = sorted(results, key=lambda r: r.key)
            order: list[int] | range = range(len(results))
        else:
            order = memo.order
        items = self._items.get(env)
        if items is None:
            items = self._items[env] = _Items()
        bound = memo.bound
        parts: list[bytes] = []
        slots: list[int] = []
        per_request = False  # an error result: built per request, so neither memo keeps it
        young = items.young
        for i in order:
            result = results[i]
            hit = young.get(id(result))
            if hit is None:
                hit = items.promote(result, bound)
                if hit is None:
                    key, variant, reason = exposure(result)
                    hit = (result,
                           orjson.dumps(ofrep_item(result, flag_set.flags.get(key)), option=_SORT),
                           self.hot.exposure_slot(env, key, variant, reason))
                    if result.error_code is None:
                        items.put(hit, bound)
                    else:
                        per_request = True
                young = items.young  # a put may have started a new generation
            parts.append(hit[1])
            slots.append(hit[2])
        canonical = b'{"flags":[' + b",".join(parts) + b'],"metadata":' + memo.metadata
        entry = CachedResult(body_prefix=canonical,
                             digest=hashlib.blake2b(canonical, digest_size=16).digest(),
                             exposures=tuple(slots))
        if not per_request:
            self._remember(memo, vector, entry, results)
        return entry
