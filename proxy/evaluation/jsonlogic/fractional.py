"""flagd's ``fractional``: sticky percentage buckets by murmur3, in two hashing generations.

``[bucketBy?, [variant, weight?], ...]``; bucket = (hash * total) >> 32, hash = unsigned 32-bit
murmur3 (seed 0); the first variant whose cumulative weight exceeds the bucket wins. Weights
default to 1 and negative ones count as 0. Literal buckets are validated and precomputed at
compile time; what is wrong with them is a warning (refused by push/validate) and evaluates to
null, as in flagd's evaluators. The environment's generation (``cc.fractional_hash``, DESIGN
§9) decides what is hashed:

- v2 (flagd-core 4.0.1 in JS, the Python provider <= 0.5.2): the bucketing value is the first
  argument when it is a string (or an expression yielding one), else ``flagKey +
  targetingKey``; a missing or empty targetingKey gives null; the UTF-8 bytes are hashed. A
  non-integer weight (``50.5``) makes the result null; ``50.0`` counts as 50.
  Divergence, documented: flagd-core 4.0.1 (imurmurhash) feeds each UTF-16 code unit in as
  one byte, so non-ASCII bucketing values land in other buckets there; we hash UTF-8 like
  flagd's Go evaluator and the Python provider.
- v3 (openfeature-flagd-core 2.x ``custom_ops.fractional``, the Python provider 0.6.x): the
  canonical CBOR (cbor2, ``canonical=True``) of ``[flagKey, targetingKey]`` when the first
  argument (evaluated) is a list, i.e. a bucket (targetingKey must be a non-empty string, else
  null; flagKey "" where ``$flagd`` has none), else of the evaluated first argument whatever
  its type (null gives null; floats without a fraction within [-2^63, 2^64-1] are encoded as
  integers, recursively); a weight must be an integer (``50.0`` and booleans make the result
  null); a total of 0 gives null; a bucket's variant may be any value.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import mmh3

from proxy.evaluation.jsonlogic.base import Builder
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.bucketing import (
    MAX_TOTAL_WEIGHT,
    TEXT_HEADS,
    VARIANT_TYPES,
    cbor_key,
    decide_v3,
    integer_weight,
    pick,
    pick_bytes,
    runtime_buckets,
    shorthand_key,
    shorthand_prefix,
    text_head,
    v3_buckets,
    v3_weight,
)
from proxy.evaluation.jsonlogic.jsvalue import MISSING, Const, to_string
from proxy.model import Assigned, FractionalHash

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled, Fn
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler

def bucketing_value(d: Any, by: Any, flag_key: str | None) -> str | None:
    """The string to hash: ``by`` when it is a string, else flagKey + targetingKey (null when
    there is no usable targetingKey). Without a known flag key it comes from ``$flagd``."""
    if d.__class__ is not dict:
        return None
    if flag_key is None:
        flagd = d.get("$flagd")
        if not flagd or flagd.__class__ is not dict:
            return None
        fk = flagd.get("flagKey", MISSING)
        flag_key = "undefined" if fk is MISSING else to_string(fk)
    if by.__class__ is str:
        return by
    tk = d.get("targetingKey")
    if not tk:
        return None
    return flag_key + (tk if tk.__class__ is str else to_string(tk))


def _keyed(flag_key: str, by: str | None, variants: list[Any], cum: list[int], total: int) -> Any:
    """The hot path: literal buckets, bucketing by a literal or by flagKey + targetingKey."""
    n = len(variants)
    hash32 = mmh3.hash
    if by is not None:
        # a constant bucketing value: every evaluation lands in the same bucket
        i = bisect_right(cum, (hash32(by, 0, False) * total) >> 32)
        const = variants[i] if i < n else None
        return lambda d: const

    def fractional_keyed(d: Any) -> Any:
        tk = d.get("targetingKey") if d.__class__ is dict else None
        if not tk:
            return None
        if tk.__class__ is not str:
            tk = to_string(tk)
        i = bisect_right(cum, (hash32(flag_key + tk, 0, False) * total) >> 32)
        return variants[i] if i < n else None

    return fractional_keyed


def _check_bucket(cc: LogicCompiler, raw: Any, path: str,
                  weight_of: Any = None) -> tuple[Any, int | None]:
    """Compile one literal bucket; returns (compiled bucket, literal weight or None).
    ``weight_of`` reads a literal weight (None: not an integer); v2's by default."""
    if raw.__class__ is dict and raw:
        return cc.compile(raw, path), None
    if raw.__class__ is not list or not 1 <= len(raw) <= 2:
        cc.warn(path, "a bucket is [variant] or [variant, weight]")
        return Const(None), None
    variant = cc.compile(raw[0], f"{path}[0]")
    if variant.__class__ is Const and variant.value.__class__ not in VARIANT_TYPES:  # type: ignore[union-attr]
        cc.warn(path, "variant must be a string, number, boolean or null")
    weight: Any = Const(1) if len(raw) == 1 else cc.compile(raw[1], f"{path}[1]")
    literal = None
    if weight.__class__ is Const:
        literal = (weight_of or integer_weight)(weight.value)
        if literal is None:
            cc.warn(path, "weight must be an integer")
            literal = 0
        literal = max(0, literal)
    if variant.__class__ is Const and weight.__class__ is Const:
        return Const([variant.value, weight.value]), literal  # type: ignore[union-attr]
    vf, wf = as_fn(variant), as_fn(weight)
    return (lambda d: [vf(d), wf(d)]), literal


def _null(d: Any) -> None:
    return None


def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    cc.uses_fractional = True
    outcome = cc.result_here  # (read before compiling the arguments changes it)
    built = build_v3(cc, args, path) if cc.fractional_hash is FractionalHash.V3 else \
        build_v2(cc, args, path)
    # Only a pick that is the rule's outcome is an assignment (an operand stays a string).
    return _marked(built) if cc.mark_assigned and outcome else built


def _marked(built: Compiled) -> Fn:
    """``built`` with the variant names it picks marked as split assignments."""
    inner = as_fn(built)

    def fractional_assigned(d: Any) -> Any:
        picked = inner(d)
        return Assigned(picked) if picked.__class__ is str else picked

    return fractional_assigned


def build_v2(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    # At the top level the flag key is known now; inside an iterator the reference reads the
    # element's $flagd (usually absent: null), so keep reading the data there.
    baked_key = cc.flag_key if cc.scope == 0 else None
    if baked_key is None:
        cc.needs_flagd = True
    # Bucketing by flagKey + targetingKey (unless the first argument names the value: then
    # its own reads are recorded as it compiles).
    cc.reads_data(["targetingKey"])
    if args.__class__ is not list:
        cc.warn(path, "fractional takes [bucketBy?, [variant, weight?], ...]")
        return _null
    if not args:
        cc.warn(path, "fractional needs at least one bucket")
        return _null
    by: Any = None
    start = 0
    first = args[0]
    if first.__class__ is str:
        by, start = first, 1
    elif first.__class__ is dict:
        by, start = cc.compile(first, f"{path}[0]"), 1
        if by.__class__ is Const:
            by = by.value
    elif first.__class__ is not list:
        # refused by push/validate; flagd's evaluators answer null for it at run time
        cc.warn(f"{path}[0]", "the first argument must be a bucketing expression or a [variant, weight] bucket")
        return _null
    if start == len(args):
        cc.warn(path, "fractional needs at least one bucket")
        return _null
    compiled, literal_total, all_literal = [], 0, True
    for i in range(start, len(args)):
        bucket, weight = _check_bucket(cc, args[i], f"{path}[{i}]")
        compiled.append(bucket)
        if weight is None:
            all_literal = False
        else:
            literal_total += weight
    if literal_total > MAX_TOTAL_WEIGHT:
        cc.warn(path, f"total weight {literal_total} exceeds {MAX_TOTAL_WEIGHT}")
        return _null
    by_fn = as_fn(by) if callable(by) else None
    by_const = None if callable(by) else by
    if all_literal and all(b.__class__ is Const for b in compiled):
        return _literal_buckets(cc, baked_key, by_fn, by_const, [b.value for b in compiled])
    return _computed_buckets(cc, baked_key, by_fn, by_const, [as_fn(b) for b in compiled])


def _literal_buckets(cc: LogicCompiler, baked_key: str | None, by_fn: Fn | None, by_const: Any,
                     entries: list[Any]) -> Compiled:
    """Buckets known at load: validated and accumulated once."""
    table = runtime_buckets(entries)
    if table is None:
        return Const(None)  # problems already reported
    variants, cum, total = table
    trace = cc.trace
    if baked_key is not None and by_fn is None and trace is None and total > 0:
        return _keyed(baked_key, by_const if by_const.__class__ is str else None, variants, cum, total)

    def fractional(d: Any) -> Any:
        value = bucketing_value(d, by_fn(d) if by_fn is not None else by_const, baked_key)
        if value is None or total == 0:
            return None
        return pick(value, variants, cum, total, trace)

    return fractional


def _computed_buckets(cc: LogicCompiler, baked_key: str | None, by_fn: Fn | None, by_const: Any,
                      fns: list[Fn]) -> Fn:
    """Buckets (or weights) computed per request: validated like flagd does at run time."""
    trace = cc.trace

    def fractional_dynamic(d: Any) -> Any:
        # arguments are evaluated first (an error there is an error even without a key)
        by = by_fn(d) if by_fn is not None else by_const
        entries = [f(d) for f in fns]
        value = bucketing_value(d, by, baked_key)
        if value is None:
            return None
        table = runtime_buckets(entries)
        if table is None or table[2] == 0:
            if trace is not None:
                trace.append("fractional: invalid computed buckets -> null")
            return None
        variants, cum, total = table
        return pick(value, variants, cum, total, trace)

    return fractional_dynamic


def build_v3(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    baked_key = cc.flag_key if cc.scope == 0 else None
    if baked_key is None:
        cc.needs_flagd = True
    cc.reads_data(["targetingKey"])
    if args.__class__ is not list or not args:
        cc.warn(path, "fractional takes [bucketBy?, [variant, weight?], ...] with a bucket")
        return _null
    first: Any = args[0]
    start = 0 if first.__class__ is list else 1
    if first.__class__ is dict:
        first = cc.compile(first, f"{path}[0]")
        if first.__class__ is Const:
            first = first.value
    elif first is None:
        cc.warn(f"{path}[0]", "the bucketBy value is null: fractional answers null")
    if start == len(args):
        cc.warn(path, "fractional needs at least one bucket")
        return _null
    compiled, all_literal = [], True
    for i in range(start, len(args)):
        bucket, weight = _check_bucket(cc, args[i], f"{path}[{i}]", v3_weight)
        compiled.append(bucket)
        all_literal = all_literal and weight is not None
    if all_literal and all(b.__class__ is Const for b in compiled):
        return _literal_v3(cc, baked_key, first, [b.value for b in compiled], start == 0)
    fns = [as_fn(b) for b in compiled]
    first_fn = first if callable(first) else (lambda d, v=first: v)
    trace = cc.trace

    def fractional_v3_dynamic(d: Any) -> Any:
        by = first_fn(d)  # every argument first, as the reference evaluates them
        entries = [f(d) for f in fns]
        if start == 0:
            return decide_v3(d, entries[0], entries[1:], baked_key, trace)
        return decide_v3(d, by, entries, baked_key, trace)

    return fractional_v3_dynamic


def _literal_v3(cc: LogicCompiler, baked_key: str | None, first: Any, entries: list[Any],
                first_is_bucket: bool) -> Compiled:
    """Literal buckets (``entries``; the first argument's among them when it is a literal
    bucket), validated once; the shorthand with a known flag key hashes a precomputed CBOR
    prefix plus the targetingKey (the hot path)."""
    trace = cc.trace
    rest = entries[1:] if first_is_bucket else entries
    if callable(first) or trace is not None:  # computed bucketBy (maybe a list), or explain
        value = entries[0] if first_is_bucket else first
        by = first if callable(first) else (lambda d: value)

        def fractional_v3_by(d: Any) -> Any:
            return decide_v3(d, by(d), rest, baked_key, trace)

        return fractional_v3_by
    shorthand = first_is_bucket or first.__class__ is list  # a folded list is a bucket too
    table = v3_buckets(entries if first_is_bucket else [first, *rest] if shorthand else rest)
    if table is None:
        return Const(None)  # problems already reported (or a total of 0)
    variants, cum, total = table
    if not shorthand:  # a constant bucketing value: always the same bucket
        key = None if first is None else cbor_key(first)
        const = None if key is None else pick_bytes(key, variants, cum, total)
        return lambda d: const
    prefix = None if baked_key is None else shorthand_prefix(baked_key)
    if prefix is None:
        return lambda d: (None if (k := shorthand_key(d, baked_key)) is None
                          else pick_bytes(k, variants, cum, total))
    return _keyed_v3(prefix, variants, cum, total)


def _keyed_v3(prefix: bytes, variants: list[Any], cum: list[int], total: int) -> Fn:
    n = len(variants)
    hash32 = mmh3.hash
    heads = TEXT_HEADS

    def fractional_v3_keyed(d: Any) -> Any:
        tk = d.get("targetingKey") if d.__class__ is dict else None
        if tk.__class__ is not str or not tk:
            return None
        try:
            raw = tk.encode()
        except UnicodeEncodeError:
            return None
        size = len(raw)
        key = prefix + (heads[size] if size < 24 else text_head(size)) + raw
        i = bisect_right(cum, (hash32(key, 0, False) * total) >> 32)
        return variants[i] if i < n else None

    return fractional_v3_keyed


BUILDERS: dict[str, Builder] = {"fractional": build}
