"""Bulk response bodies: a flag set's evaluation results as OFREP JSON, serialised once.

The compiler precomputes each flag's results (its static result, one per variant), so a
bulk body is a join of bytes serialised the first time a result is seen. Two memos:

- per environment, across versions: result -> (JSON bytes, exposure slot). A change
  recompiles only the flags it touches and the others keep their Flag objects, hence their
  results, so a new version serialises only what changed. (Serialising every flag again on
  each version cost ~50 us for 50 flags, on nearly every bulk request at 100 changes/s.)
  What changed is looked up by content before it is serialised: a flag toggled back, a
  default switched back, gives new result objects with an item already made.
  Generational: when the young dict outgrows its bound it becomes the old one and lookups
  promote from there, so results of replaced flags are gone two generations later.
- per flag set and environment: its layout (``Layout``: the static flags' items joined once,
  in output order, between the slots of the dynamic ones), and the outcome vector (the
  dynamic flags' fragments, output order) -> entry. A body is one join of the layout's
  segments and an entry's fragments; many contexts share one vector. Bounded by bytes over all environments (``bodies_bytes``), LRU
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
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson

from proxy.api.cache import MAX_ITEM_SHARE, POINTER, CachedResult, Layout
from proxy.api.metrics import HotMetrics
from proxy.config import Settings
from proxy.evaluation.plan import Plan, picker, plan_of
from proxy.model import EvaluationResult, Flag, FlagSet, VariantType

_SORT = orjson.OPT_SORT_KEYS
# Bytes a memoised vector holds beyond its entry (which holds the key, its fragments): the
# OrderedDict's slot and links. Measured with tracemalloc (CPython 3.11, 64-bit;
# tests/unit/api/test_cache_bytes.py checks the totals against the heap); rounded up.
VECTOR_OVERHEAD = 64
BYTES_OVERHEAD = 33  # a bytes object's header: an error's fragment, built per request
TUPLE_OVERHEAD = 56  # a tuple's header (with the garbage collector's)
# Bodies up to this size are kept whole in their entries: a hit is then one join of two parts
# (spliced, ~1 us more at 20 flags), and 10,000 of them take ~40 MB. Larger ones are spliced:
# 350 flags' ~38 KB bodies would let the default cache_bytes keep ~1,800 users, not 10,000.
WHOLE_BODY_MAX = 4096
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


# (result, its OFREP item as JSON, its exposure counter slot, the item's digest). Holding
# ``result`` keeps its id, the memo's key, from being reused by another object.
_Item = tuple[EvaluationResult, bytes, int, int]
_FRAG, _SLOT, _DIGEST = itemgetter(1), itemgetter(2), itemgetter(3)
DIGEST_MASK = (1 << 128) - 1


def item_digest(fragment: bytes) -> int:
    """One item's share of a body's digest (see ``BulkBodies``)."""
    return int.from_bytes(hashlib.blake2b(fragment, digest_size=16, person=b"item").digest())


def body_digest(total: int) -> bytes:
    return (total & DIGEST_MASK).to_bytes(16)


def _value_key(value: Any, flag: Flag | None) -> Any:
    """What a result's value puts on the wire, as a key: exact about types (``True``, ``1``
    and ``1.0`` are equal in Python, not in JSON; an integer of a float flag is sent as a
    float; ``0.0`` and ``-0.0`` differ)."""
    c = value.__class__
    if c is bool or c is str or value is None:
        return c, value
    if c is int:
        return c, value, _is_float_flag(flag)
    if c is float:
        return c, value.hex()
    return orjson.dumps(value, option=_SORT)  # an object or array


def wire_key(result: EvaluationResult, flag: Flag | None) -> tuple[Any, ...]:
    """Equal for two error-free results exactly when their OFREP items are the same bytes
    (and their exposures count in the same series)."""
    metadata = result.metadata
    return (result.key, result.reason, result.variant, _value_key(result.value, flag),
            orjson.dumps(metadata, option=_SORT) if metadata else b"")


# (an item's JSON, its exposure slot, its digest): what ``_Item`` holds beyond its result.
_Wire = tuple[bytes, int, int]


class _Generations:
    """A memo bounded by generations: when ``young`` outgrows the bound it becomes ``old``,
    and what is found in ``old`` moves back to ``young`` (still in use), so what nothing
    asked for is gone two generations later."""

    __slots__ = ("old", "young")

    def __init__(self) -> None:
        self.young: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}

    def promote(self, key: Any, bound: int) -> Any:
        """After a miss in ``young`` (looked up inline by callers on hot paths)."""
        hit = self.old.get(key)
        if hit is not None:
            self.put(key, hit, bound)
        return hit

    def put(self, key: Any, value: Any, bound: int) -> None:
        if len(self.young) >= bound:
            self.old, self.young = self.young, {}
        self.young[key] = value


class _Items:
    """One environment's serialised results, by result object (``by_id``: id -> ``_Item``,
    the hot path) and by content (``by_wire``: ``wire_key`` -> ``_Wire``). A change
    recompiles the flags it touches into new result objects, but their content often comes
    back: a flag toggled off and on again, a default switched back. Those are found by
    content and not serialised again (under ``bench/bulk_churn.py`` that serialisation and
    its digest were most of what patching a version's layout cost a request)."""

    __slots__ = ("by_id", "by_wire")

    def __init__(self) -> None:
        self.by_id = _Generations()  # (holding the result keeps its id from being reused)
        self.by_wire = _Generations()


def _changed_since(plan: Plan, token: object) -> frozenset[str] | None:
    """The static keys changed since the ancestor plan ``token`` names, or None when it is
    not among ``plan``'s remembered ancestors."""
    lineage = plan.lineage
    if lineage and lineage[0][0] is token:  # the usual case: one version back
        return lineage[0][1]
    return next((keys for t, keys in lineage if t is token), None)


def _metadata(flag_set: FlagSet) -> tuple[bytes, int]:
    """The body's ``metadata`` part and its share of the digest: one form for the memoised
    and the generic bodies, whose ETags must agree for equal bodies."""
    metadata = orjson.dumps(dict(flag_set.metadata), option=_SORT)
    return metadata, int.from_bytes(
        hashlib.blake2b(metadata, digest_size=16, person=b"metadata").digest())


def _items_bound(flag_set: FlagSet) -> int:
    """Serialised results per generation of an environment's item memos."""
    return max(MIN_ITEMS_BOUND, 4 * len(flag_set.flags))


class _Shape:
    """What a flag set's layout shares with the layouts of the versions derived from it (the
    same flags in the same order): where each static item sits, the metadata, the items'
    memo bound, and whether entries hold whole bodies (decided by the first body)."""

    __slots__ = ("bound", "metadata", "metadata_digest", "static_at", "whole")

    def __init__(self, flag_set: FlagSet) -> None:
        self.bound = _items_bound(flag_set)
        self.metadata, self.metadata_digest = _metadata(flag_set)
        # static key -> (segment, part, index in plan.static)
        self.static_at: dict[str, tuple[int, int, int]] = {}
        self.whole: bool | None = None  # entries hold whole bodies (small ones), else spliced


class _SetMemo:
    """Per flag set: its layout, what it was built from (to patch it for the next version:
    ``BulkBodies._derived``) and bodies by outcome (the dynamic flags' fragments)."""

    __slots__ = ("bytes", "flag_set", "layout", "plan_token", "runs", "shape", "static_items",
                 "vectors")

    def __init__(self, flag_set: FlagSet, layout: Layout, shape: _Shape, plan_token: object,
                 runs: list[list[bytes]], static_items: list[_Item]):
        self.flag_set = flag_set
        self.layout = layout
        self.shape = shape
        self.plan_token = plan_token  # the plan the layout was built for
        self.runs = runs  # each segment's parts
        self.static_items = static_items  # in plan.static order
        # The memo's keys hold the fragments, so equal keys are equal bodies.
        self.vectors: OrderedDict[tuple[bytes, ...], CachedResult] = OrderedDict()
        self.bytes = 0  # accounted bytes of ``vectors``


def vector_bytes(entry: CachedResult, key: tuple[bytes, ...]) -> int:
    """Approximate heap bytes of one memoised vector: its entry, the memo's slot and the key
    (unless the entry holds it: spliced, its fragments)."""
    if entry.fragments is key:
        return entry.nbytes + VECTOR_OVERHEAD
    return entry.nbytes + VECTOR_OVERHEAD + POINTER * len(key) + TUPLE_OVERHEAD


class BulkBodies:
    """Bulk bodies, their digests (the ETag's base) and exposure slots.

    The digest is the sum (mod 2**128) of one blake2b hash per item and one of the
    metadata: a hash of what the client sees (the items are key-sorted, so the set of items
    and the metadata determine the body), summed so that the static flags' share is computed
    once per flag set and a request hashes nothing (blake2b over a 38 KB body of 350 flags
    cost ~80 us, more than evaluating them)."""

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

    def _remember(self, memo: _SetMemo, vector: tuple[bytes, ...], entry: CachedResult) -> None:
        size = vector_bytes(entry, vector)
        if size > self.max_bytes // MAX_ITEM_SHARE:
            return
        memo.vectors[vector] = entry
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
        vector, entry = memo.vectors.popitem(last=False)
        size = vector_bytes(entry, vector)
        memo.bytes -= size
        self.bytes -= size

    def _memo(self, env: str, flag_set: FlagSet, plan: Plan) -> _SetMemo:
        """``flag_set``'s memo, made on its first body: the previous flag set's, its layout
        patched when ``plan`` derives from the plan that one was built for (taken over whole
        when only targeted flags changed), else built."""
        memo = self._sets.get(env)
        if memo is not None and memo.flag_set is flag_set:
            return memo
        if memo is not None:
            derived = self._derived(env, flag_set, plan, memo)
            if derived is memo:  # the same layout: its bodies are this flag set's too
                return memo
            self.bytes -= memo.bytes  # an older flag set's bodies: never asked for again
            memo = derived  # (replaced in ``_sets`` below)
        if memo is None:
            memo = self._built(env, flag_set, plan)
        self._sets[env] = memo
        return memo

    def _env_items(self, env: str) -> _Items:
        items = self._items.get(env)
        if items is None:
            items = self._items[env] = _Items()
        return items

    def _item(self, env: str, flag_set: FlagSet, items: _Items, bound: int,
              result: EvaluationResult) -> _Item:
        """One result's item, serialised on first sight of its content (an error: every
        time, never kept)."""
        by_id = items.by_id
        hit = by_id.young.get(id(result)) or by_id.promote(id(result), bound)
        if hit is not None:
            return hit
        flag = flag_set.flags.get(result.key)
        if result.error_code is not None:
            return (result, *self._serialised(env, result, flag))
        key = wire_key(result, flag)
        by_wire = items.by_wire
        wire = by_wire.young.get(key) or by_wire.promote(key, bound)
        if wire is None or not self.hot.slot_live(wire[1]):  # (a flag deleted, then re-created)
            wire = self._serialised(env, result, flag)
            by_wire.put(key, wire, bound)
        hit = (result, *wire)
        by_id.put(id(result), hit, bound)
        return hit

    def _fill(self, env: str, flag_set: FlagSet, items: _Items, bound: int,
              found: tuple[_Item | None, ...], dynamic: Sequence[EvaluationResult]
              ) -> tuple[tuple[_Item, ...], bool]:
        """``found`` with the items not found by object filled in, and whether one is an
        error (never kept by the memos: always among those not found)."""
        filled = list(found)
        errors = False
        for n, hit in enumerate(found):
            if hit is None:
                result = dynamic[n]
                filled[n] = self._item(env, flag_set, items, bound, result)
                errors = errors or result.error_code is not None
        return tuple(filled), errors  # type: ignore[arg-type]

    def _serialised(self, env: str, result: EvaluationResult, flag: Flag | None) -> _Wire:
        fragment = orjson.dumps(ofrep_item(result, flag), option=_SORT)
        return fragment, self.hot.exposure_slot(env, *exposure(result)), item_digest(fragment)

    def _built(self, env: str, flag_set: FlagSet, plan: Plan) -> _SetMemo:
        items = self._env_items(env)
        shape = _Shape(flag_set)
        static_items = [self._item(env, flag_set, items, shape.bound, r) for r in plan.static]
        static = {key: (i, item) for i, (key, item)
                  in enumerate(zip(plan.static_keys, static_items, strict=True))}
        dynamic = {key: i for i, key in enumerate(plan.dynamic_keys)}
        runs: list[list[bytes]] = []
        order: list[int] = []  # output order -> index in the plan's order, per dynamic flag
        run = [b'{"flags":[']
        for n, key in enumerate(sorted(flag_set.flags)):
            if n:
                run.append(b",")
            if key in dynamic:
                runs.append(run)
                order.append(dynamic[key])
                run = []
            else:
                i, item = static[key]
                shape.static_at[key] = (len(runs), len(run), i)
                run.append(item[1])
        run.append(b'],"metadata":' + shape.metadata)
        runs.append(run)
        layout = Layout(tuple(b"".join(r) for r in runs), picker(order),
                        tuple(map(_SLOT, static_items)),
                        sum(map(_DIGEST, static_items)) + shape.metadata_digest)
        return _SetMemo(flag_set, layout, shape, plan.token, runs, static_items)

    def _derived(self, env: str, flag_set: FlagSet, plan: Plan, base: _SetMemo
                 ) -> _SetMemo | None:
        """The memo of ``flag_set`` with ``base``'s layout patched, when ``plan`` derives from
        the plan ``base`` was built for (the same flags in the same order: only the static
        items that changed are looked up and their segments joined again; ``base`` itself,
        now ``flag_set``'s, when none did), else None."""
        changed = _changed_since(plan, base.plan_token)
        if changed is None or base.flag_set.metadata != flag_set.metadata:
            return None
        if not changed:  # only targeted flags changed: the same static parts, so the same
            # body for the same outcome (items, digest and slots all follow from the content)
            base.flag_set, base.plan_token = flag_set, plan.token
            return base
        shape, layout = base.shape, base.layout
        items = self._env_items(env)
        runs, static_items = base.runs.copy(), base.static_items.copy()
        slots, digest = list(layout.slots), layout.digest
        touched: dict[int, list[bytes]] = {}  # segment -> its parts, copied to be patched
        for key in changed:
            segment, part, i = shape.static_at[key]
            run = touched.get(segment)
            if run is None:
                run = touched[segment] = runs[segment] = runs[segment].copy()
            item = self._item(env, flag_set, items, shape.bound, plan.static[i])
            run[part] = item[1]
            digest += item[3] - static_items[i][3]  # the sum, patched (see BulkBodies)
            static_items[i], slots[i] = item, item[2]
        layout = layout.patched({segment: b"".join(run) for segment, run in touched.items()},
                                tuple(slots), digest)
        return _SetMemo(flag_set, layout, shape, plan.token, runs, static_items)

    def entry(self, env: str, flag_set: FlagSet, plan: Plan,
              dynamic: Sequence[EvaluationResult]) -> CachedResult:
        """The result of a bulk evaluation: ``plan``'s dynamic results (plan order) spliced
        into the flag set's layout; bodies with the same outcome are built once."""
        memo = self._memo(env, flag_set, plan)
        layout = memo.layout
        items = self._env_items(env)
        per_request = False  # an error result: built per request, so neither memo keeps it
        found = tuple(map(items.by_id.young.get, map(id, dynamic)))  # one pass in C
        if None in found:  # results not seen lately (a new version's), or errors
            found, per_request = self._fill(env, flag_set, items, memo.shape.bound, found,
                                            dynamic)
        fragments = layout.order(tuple(map(_FRAG, found)))  # output order
        if not per_request:
            known = memo.vectors.get(fragments)
            if known is not None:
                memo.vectors.move_to_end(fragments)
                return known
        entry = self._new_entry(memo.shape, layout, found, fragments, dynamic, per_request)
        if not per_request:
            self._remember(memo, fragments, entry)
        return entry

    @staticmethod
    def _new_entry(shape: _Shape, layout: Layout, found: tuple[_Item, ...],
                   fragments: tuple[bytes, ...], dynamic: Sequence[EvaluationResult],
                   per_request: bool) -> CachedResult:
        """The entry of an outcome not memoised: its body (whole or spliced), digest and
        exposure slots."""
        digest = body_digest(layout.digest + sum(map(_DIGEST, found)))
        whole = None
        if shape.whole is None:  # the first body tells how large this flag set's are (its
            whole = layout.join(fragments, b"")  # derived versions' keep the decision)
            shape.whole = len(whole) <= WHOLE_BODY_MAX
        if shape.whole:
            return CachedResult(whole or layout.join(fragments, b""), digest,
                                layout.slots + tuple(map(_SLOT, found)))
        own = sum(len(f[1]) + BYTES_OVERHEAD for f, r in zip(found, dynamic, strict=True)
                  if r.error_code is not None) if per_request else 0
        return CachedResult.spliced(layout, fragments, digest, tuple(map(_SLOT, found)), own)

    def body(self, env: str, flag_set: FlagSet, results: list[EvaluationResult]) -> CachedResult:
        """The body of ``evaluate_all(flag_set, ...)``'s results, document order (without
        ``eventStreams``)."""
        plan = plan_of(flag_set)
        if len(results) == len(flag_set.flags) and all(
                results[p] is r for p, r in zip(plan.static_positions, plan.static, strict=True)):
            return self.entry(env, flag_set, plan, plan.pick_dynamic(results))  # type: ignore[arg-type]
        return self.generic(env, flag_set, results)

    def generic(self, env: str, flag_set: FlagSet, results: list[EvaluationResult]
                ) -> CachedResult:
        """Any results (an INVALID_CONTEXT error for every flag...): built per request."""
        items = self._env_items(env)
        bound = _items_bound(flag_set)
        found = [self._item(env, flag_set, items, bound, r)
                 for r in sorted(results, key=lambda r: r.key)]
        metadata, metadata_digest = _metadata(flag_set)
        body = (b'{"flags":[' + b",".join(map(_FRAG, found)) + b'],"metadata":' + metadata)
        digest = sum(map(_DIGEST, found)) + metadata_digest
        return CachedResult(body_prefix=body, digest=body_digest(digest),
                            exposures=tuple(map(_SLOT, found)))
