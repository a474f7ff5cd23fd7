"""What ``fractional`` hashes and how a hash picks a bucket, in both hashing generations
(DESIGN §9); pure functions over evaluated values, shared by the compiled operator
(``fractional.py``) and by tests that compare it with the references.

- v2: murmur3 of a string's UTF-8 bytes (``bucket_of``, ``pick``); ``runtime_buckets``
  validates buckets as flagd-core 4.0.1 does (``50.0`` counts as 50, variants are scalars).
- v3: murmur3 of the canonical CBOR of the bucketing value (``cbor_key``,
  ``shorthand_key``, ``pick_bytes``); ``v3_buckets`` validates buckets as
  openfeature-flagd-core 2.x's ``_parse_fraction`` does; ``decide_v3`` is that reference's
  whole ``fractional(data, *args)`` over evaluated arguments.

Imports nothing from ``proxy`` (like ``base`` and ``jsvalue``, operator modules may use it).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import cbor2
import mmh3
import orjson

MAX_TOTAL_WEIGHT = 2**31 - 1
VARIANT_TYPES = (str, int, float, bool, type(None))


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


def integer_weight(w: Any) -> int | None:
    if w.__class__ is int:
        return w
    if w.__class__ is float and w.is_integer():
        return int(w)
    return None


def runtime_buckets(entries: Any) -> tuple[list[Any], list[int], int] | None:
    """Validate evaluated buckets like flagd does at run time: (variants, cumulative, total)."""
    return _buckets(entries, integer_weight, VARIANT_TYPES, allow_zero=True)


def _buckets(entries: Any, weight_of: Any, variant_types: Any, *, allow_zero: bool
             ) -> tuple[list[Any], list[int], int] | None:
    """(variants, cumulative weights, total) of ``[variant, weight?]`` buckets, or None for a
    malformed one, a weight ``weight_of`` refuses, or a total out of range. ``variant_types``
    None: any variant value."""
    variants: list[Any] = []
    cum: list[int] = []
    total = 0
    for e in entries:
        if e.__class__ is not list or not 1 <= len(e) <= 2:
            return None
        if variant_types is not None and e[0].__class__ not in variant_types:
            return None
        w = 1
        if len(e) == 2:
            w = weight_of(e[1])
            if w is None:
                return None
            w = max(0, w)
        total += w
        variants.append(e[0])
        cum.append(total)
    if total > MAX_TOTAL_WEIGHT or (total <= 0 and not allow_zero):
        return None
    return variants, cum, total



# -- v3: murmur3 of canonical CBOR ------------------------------------------------------------
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
TEXT_HEADS = [bytes([0x60 + n]) for n in range(24)]  # canonical CBOR text heads, length < 24


def normalize_numbers(value: Any) -> Any:
    """Floats without a fraction within the 64-bit integer range as integers, recursively (the
    reference's ``normalize_numbers``: 2.0 and 2 bucket alike; 1e20 stays a float)."""
    c = value.__class__
    if c is dict:
        return {k: normalize_numbers(v) for k, v in value.items()}
    if c is list:
        return [normalize_numbers(v) for v in value]
    if c is float and value.is_integer() and _INT64_MIN <= value <= _UINT64_MAX:
        return int(value)
    return value


def cbor_key(value: Any) -> bytes | None:
    """The bytes v3 hashes for a bucketing value; None where the reference cannot encode it
    (it logs and answers null)."""
    try:
        return cbor2.dumps(normalize_numbers(value), canonical=True)
    except Exception:
        return None


def text_head(n: int) -> bytes:
    """The canonical CBOR head of a text string of ``n`` UTF-8 bytes."""
    if n < 24:
        return TEXT_HEADS[n]
    if n < 0x100:
        return bytes((0x78, n))
    if n < 0x10000:
        return b"\x79" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x7a" + n.to_bytes(4, "big")
    return b"\x7b" + n.to_bytes(8, "big")


def shorthand_prefix(flag_key: str) -> bytes | None:
    """The canonical CBOR of ``[flag_key, ...]`` up to the second item (None: not encodable)."""
    try:
        raw = flag_key.encode()
    except UnicodeEncodeError:  # a lone surrogate: cbor2 refuses it too
        return None
    return b"\x82" + text_head(len(raw)) + raw


def v3_weight(w: Any) -> int | None:
    return w if w.__class__ is int else None  # 50.0 and True are refused by the reference


def v3_buckets(entries: Any) -> tuple[list[Any], list[int], int] | None:
    """The reference's ``_parse_fraction`` over evaluated buckets: (variants, cumulative,
    total), or None when it answers null (a malformed bucket, a non-integer weight, a total
    of 0 or over 2^31-1)."""
    return _buckets(entries, v3_weight, None, allow_zero=False)


def pick_bytes(key: bytes, variants: list[Any], cum: list[int], total: int,
               trace: list[str] | None = None) -> Any:
    h = mmh3.hash(key, 0, False)
    bucket = (h * total) >> 32
    i = bisect_right(cum, bucket)
    out = variants[i] if i < len(variants) else None
    if trace is not None:
        trace.append(f"fractional (v3) bucket {bucket}/{total} hash={h} cbor={key.hex()} "
                     f"-> {show(out)}")
    return out


def show(v: Any) -> str:
    try:
        return orjson.dumps(v).decode()[:200]
    except TypeError:
        return repr(v)[:200]


def shorthand_key(d: Any, flag_key: str | None) -> bytes | None:
    """``[flagKey, targetingKey]`` as v3 hashes it. Like the reference, data that is no object
    fails (GENERAL) and flagKey is read from ``$flagd`` (default "") unless known."""
    tk = d.get("targetingKey")
    if tk.__class__ is not str or not tk:
        return None
    if flag_key is None:
        flag_key = d.get("$flagd", {}).get("flagKey", "")
    if flag_key.__class__ is str:
        prefix = shorthand_prefix(flag_key)
        if prefix is None:
            return None
        try:
            raw = tk.encode()
        except UnicodeEncodeError:
            return None
        return prefix + text_head(len(raw)) + raw
    return cbor_key([flag_key, tk])


def decide_v3(d: Any, first: Any, rest: list[Any], flag_key: str | None,
              trace: list[str] | None = None) -> Any:
    """v3 over evaluated arguments, exactly the reference's ``fractional(data, *args)``: a
    list first argument is a bucket (shorthand), anything else the value to bucket by."""
    if first.__class__ is list:
        key, entries = shorthand_key(d, flag_key), [first, *rest]
    else:
        key, entries = (None if first is None else cbor_key(first)), rest
    if key is None:
        if trace is not None:
            trace.append("fractional (v3): no bucketing value (no targetingKey, or null) -> null")
        return None
    table = v3_buckets(entries)
    if table is None:
        if trace is not None:
            trace.append("fractional (v3): invalid buckets -> null")
        return None
    return pick_bytes(key, *table, trace)
