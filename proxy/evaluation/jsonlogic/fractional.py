"""flagd's ``fractional``: sticky percentage buckets by murmur3.

``[bucketBy?, [variant, weight?], ...]``: the bucketing value is the first argument when it
is a string (or an expression yielding one), else ``flagKey + targetingKey``; a missing or
empty targetingKey gives null. hash = unsigned 32-bit murmur3 (seed 0) of the UTF-8 bytes;
bucket = (hash * total) >> 32; the first variant whose cumulative weight exceeds the bucket
wins. Weights default to 1, negative ones count as 0, a non-integer one makes the result
null. Literal buckets are validated and precomputed at compile time; what is wrong with them
is a warning (refused by push/validate) and evaluates to null, as in flagd's evaluators.

Divergence, documented: flagd's JS evaluator hashes UTF-16 code units, so non-ASCII
bucketing values land in other buckets there; we hash UTF-8 like flagd's Go evaluator.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import mmh3
import orjson

from proxy.evaluation.jsonlogic.base import Builder
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.jsvalue import MISSING, Const, to_string

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled, Fn
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler

MAX_TOTAL_WEIGHT = 2**31 - 1
_VARIANT_TYPES = (str, int, float, bool, type(None))


def bucket_of(value: str, total: int) -> tuple[int, int]:
    """(hash, bucket) of a bucketing value for a total weight."""
    h = mmh3.hash(value, signed=False)
    return h, (h * total) >> 32


def pick(value: str, variants: list[Any], cum: list[int], total: int,
         trace: list[str] | None = None) -> Any:
    """The variant whose cumulative weight first exceeds the value's bucket."""
    h, bucket = bucket_of(value, total)
    i = bisect_right(cum, bucket)
    out = variants[i] if i < len(variants) else None
    if trace is not None:
        trace.append(f"fractional bucket {bucket}/{total} hash={h} value={value!r} -> {orjson.dumps(out).decode()}")
    return out


def _integer_weight(w: Any) -> int | None:
    if w.__class__ is int:
        return w
    if w.__class__ is float and w.is_integer():
        return int(w)
    return None


def runtime_buckets(entries: Any) -> tuple[list[Any], list[int], int] | None:
    """Validate evaluated buckets like flagd does at run time: (variants, cumulative, total)."""
    variants: list[Any] = []
    cum: list[int] = []
    total = 0
    for e in entries:
        if e.__class__ is not list or not 1 <= len(e) <= 2 or e[0].__class__ not in _VARIANT_TYPES:
            return None
        w = 1
        if len(e) == 2:
            w = _integer_weight(e[1])
            if w is None:
                return None
            w = max(0, w)
        total += w
        variants.append(e[0])
        cum.append(total)
    if total > MAX_TOTAL_WEIGHT:
        return None
    return variants, cum, total


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


def _check_bucket(cc: LogicCompiler, raw: Any, path: str) -> tuple[Any, int | None]:
    """Compile one literal bucket; returns (compiled bucket, literal weight or None)."""
    if raw.__class__ is dict and raw:
        return cc.compile(raw, path), None
    if raw.__class__ is not list or not 1 <= len(raw) <= 2:
        cc.warn(path, "a bucket is [variant] or [variant, weight]")
        return Const(None), None
    variant = cc.compile(raw[0], f"{path}[0]")
    if variant.__class__ is Const and variant.value.__class__ not in _VARIANT_TYPES:  # type: ignore[union-attr]
        cc.warn(path, "variant must be a string, number, boolean or null")
    weight: Any = Const(1) if len(raw) == 1 else cc.compile(raw[1], f"{path}[1]")
    literal = None
    if weight.__class__ is Const:
        literal = _integer_weight(weight.value)
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


BUILDERS: dict[str, Builder] = {"fractional": build}
