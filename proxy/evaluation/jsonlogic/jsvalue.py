"""JavaScript value semantics for JSON values, as flagd's reference evaluator sees them.

The reference (json-logic-engine in node) runs on JS values: one number type, loose ``==``,
``ToNumber``/``ToString`` coercions and its own truthiness. These helpers reproduce that on
the Python values orjson produces (dict, list, str, int, float, bool, None), so that
``1 == 1.0``, ``"1" == 1``, ``null == 0`` and friends give the reference's answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


class Const:
    """A compile-time constant: the result of folding a subtree that reads no data."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Const({self.value!r})"


class JSFunction:
    """What a JS property lookup yields for a prototype method (``obj.toString``).

    ``var`` turns it into null, ``missing`` counts the key as present."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "JSFunction"


FUNCTION = JSFunction()
NAN = float("nan")


class JSThrow(Exception):
    """The reference engine would throw here (NaN arithmetic, bad arguments...)."""


def truthy(v: Any) -> bool:
    """json-logic-engine truthiness: JS falsy values, plus ``[]`` and ``{}`` are false."""
    if v.__class__ is float:
        return v == v and v != 0.0
    return bool(v)


def js_falsy(v: Any) -> bool:
    """Plain JS ``!v``: here ``[]`` and ``{}`` are truthy (unlike JsonLogic's truthiness)."""
    if v is None or v is False:
        return True
    c = v.__class__
    if c is int or c is float:
        return not (v == v and v != 0)
    return c is str and v == ""


def norm_number(x: float | int) -> int | float:
    """JS has one number type: integral results within the safe range become ints."""
    if x.__class__ is float:
        if x == x and x not in (math.inf, -math.inf) and x.is_integer() and abs(x) <= MAX_SAFE_INTEGER:
            return int(x)
        return x
    if abs(x) > MAX_SAFE_INTEGER:  # a double in JS
        return float(x)
    return x


_WS = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)")


def str_to_number(s: str) -> int | float:
    s = s.strip(_WS)
    if not s:
        return 0
    if _DECIMAL.fullmatch(s):
        return norm_number(float(s))
    if s in ("Infinity", "+Infinity"):
        return math.inf
    if s == "-Infinity":
        return -math.inf
    m = _RADIX.fullmatch(s)
    if m:
        base = {"x": 16, "o": 8, "b": 2}[m.group(1).lower()]
        try:
            return norm_number(int(m.group(2), base))
        except ValueError:
            return NAN
    return NAN


def to_number(v: Any) -> int | float:
    """JS ``+v``."""
    c = v.__class__
    if c is float:
        return v
    if c is int:  # a double in JS past 2^53
        return v if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER else float(v)
    if c is bool:
        return 1 if v else 0
    if v is None:
        return 0
    if c is str:
        return str_to_number(v)
    if c is list:
        return str_to_number(to_string(v))
    return NAN  # objects, functions


def number_to_string(x: int | float) -> str:
    """ECMAScript Number::toString (shortest round-trip digits, JS exponent rules)."""
    if x.__class__ is int:
        if abs(x) <= MAX_SAFE_INTEGER:
            return str(x)
        x = float(x)
    if x != x:
        return "NaN"
    if x == math.inf:
        return "Infinity"
    if x == -math.inf:
        return "-Infinity"
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) <= MAX_SAFE_INTEGER:
        return str(int(x))
    sign = "-" if x < 0 else ""
    t = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0") or "0"
    exp = int(t.exponent) + (len(t.digits) - len(digits))
    k = len(digits)
    n = exp + k
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = ("+" if e >= 0 else "-") + str(abs(e))
        out = (digits if k == 1 else digits[0] + "." + digits[1:]) + "e" + es
    return sign + out


def to_string(v: Any) -> str:
    """JS ``String(v)`` / ``'' + v``."""
    c = v.__class__
    if c is str:
        return v
    if c is bool:
        return "true" if v else "false"
    if c is int or c is float:
        return number_to_string(v)
    if v is None:
        return "null"
    if c is list:
        return _list_to_string(v)
    if v is FUNCTION:
        return "function () { [native code] }"
    return "[object Object]"


# Rules can build arrays that share sub-arrays (map of a constant map ...): a few hundred
# objects whose string form is billions of characters. Past this length String(array) fails
# (JSThrow: GENERAL at run time, a problem at load); far more than any context holds.
MAX_STRING = 8 * 1024 * 1024


def _list_to_string(v: list[Any]) -> str:
    return join_strings(("" if i is None else to_string(i) for i in v), ",")


def join_strings(strings: Iterable[str], sep: str = "") -> str:
    """``sep.join(strings)``, failing (JSThrow) once the result passes MAX_STRING."""
    parts = []
    size = 0
    for s in strings:
        size += len(s) + len(sep)
        if size > MAX_STRING:
            raise JSThrow(f"string of more than {MAX_STRING} characters")
        parts.append(s)
    return sep.join(parts)


def to_primitive(v: Any) -> Any:
    c = v.__class__
    if c is list:
        return to_string(v)
    if c is dict or v is FUNCTION:
        return to_string(v)
    return v


def is_object(v: Any) -> bool:
    """JS ``v && typeof v === 'object'`` (arrays included, even empty ones)."""
    c = v.__class__
    return c is list or c is dict


def as_double(x: Any) -> Any:
    """JS holds every number as a double: integers past 2^53 lose precision there."""
    if x.__class__ is int and not -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:
        return float(x)
    return x


def strict_eq(a: Any, b: Any) -> bool:
    """JS ``===``."""
    ca, cb = a.__class__, b.__class__
    if ca is bool or cb is bool:
        return ca is cb and a == b
    if (ca is int or ca is float) and (cb is int or cb is float):
        return as_double(a) == as_double(b)
    if ca is str and cb is str:
        return a == b
    if a is None or b is None:
        return a is b
    return a is b


def loose_eq(a: Any, b: Any) -> bool:
    """JS ``==`` (abstract equality)."""
    if a is None or b is None:
        return a is None and b is None
    ca, cb = a.__class__, b.__class__
    a_num = ca is int or ca is float
    b_num = cb is int or cb is float
    if ca is cb or (a_num and b_num):
        return strict_eq(a, b)
    if ca is bool:
        return loose_eq(1 if a else 0, b)
    if cb is bool:
        return loose_eq(a, 1 if b else 0)
    if a_num and cb is str:
        return as_double(a) == str_to_number(b)
    if ca is str and b_num:
        return str_to_number(a) == as_double(b)
    a_obj = ca is list or ca is dict or a is FUNCTION
    b_obj = cb is list or cb is dict or b is FUNCTION
    if a_obj and not b_obj:
        return loose_eq(to_primitive(a), b)
    if b_obj and not a_obj:
        return loose_eq(a, to_primitive(b))
    return False


def js_lt(a: Any, b: Any) -> bool:
    """JS ``a < b``."""
    pa, pb = to_primitive(a), to_primitive(b)
    if pa.__class__ is str and pb.__class__ is str:
        return pa < pb
    return as_double(to_number(pa)) < as_double(to_number(pb))


def js_le(a: Any, b: Any) -> bool:
    """JS ``a <= b`` (false when either side is NaN)."""
    pa, pb = to_primitive(a), to_primitive(b)
    if pa.__class__ is str and pb.__class__ is str:
        return pa <= pb
    return as_double(to_number(pa)) <= as_double(to_number(pb))


# Names that exist on every object / array / string through their prototypes: a JS property
# lookup finds a function there, not `undefined`.
_OBJECT_PROTO = frozenset(
    ["constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "toString", "valueOf", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__"]
)
_ARRAY_PROTO = _OBJECT_PROTO | frozenset(
    ["at", "concat", "copyWithin", "entries", "every", "fill", "filter", "find", "findIndex", "findLast", "findLastIndex", "flat", "flatMap", "forEach", "includes", "indexOf", "join", "keys", "lastIndexOf", "map", "pop", "push", "reduce", "reduceRight", "reverse", "shift", "slice", "some", "sort", "splice", "toReversed", "toSorted", "toSpliced", "unshift", "values", "with"]
)
_STRING_PROTO = _OBJECT_PROTO | frozenset(
    ["anchor", "at", "big", "blink", "bold", "charAt", "charCodeAt", "codePointAt", "concat", "endsWith", "fixed", "fontcolor", "fontsize", "includes", "indexOf", "isWellFormed", "italics", "lastIndexOf", "link", "localeCompare", "match", "matchAll", "normalize", "padEnd", "padStart", "repeat", "replace", "replaceAll", "search", "slice", "small", "split", "startsWith", "strike", "sub", "substr", "substring", "sup", "toLocaleLowerCase", "toLocaleUpperCase", "toLowerCase", "toUpperCase", "toWellFormed", "trim", "trimEnd", "trimStart", "trimLeft", "trimRight"]
)
_NUMBER_PROTO = _OBJECT_PROTO | frozenset(["toExponential", "toFixed", "toPrecision"])
_INDEX = re.compile(r"0|[1-9][0-9]*")

MISSING = object()  # JS `undefined`


def js_get(obj: Any, key: str) -> Any:
    """JS ``obj?.[key]`` for a string key; returns MISSING for `undefined`."""
    c = obj.__class__
    if c is dict:
        v = obj.get(key, MISSING)
        if v is MISSING:
            if key in _OBJECT_PROTO:
                return FUNCTION
            if key == "__proto__":
                return {}
        return v
    if c is list or c is str:  # indices and length alike; only their prototypes differ
        if _INDEX.fullmatch(key):
            i = int(key)
            return obj[i] if i < len(obj) else MISSING
        if key == "length":
            return len(obj)
        return FUNCTION if key in (_ARRAY_PROTO if c is list else _STRING_PROTO) else MISSING
    if c is int or c is float or c is bool:
        return FUNCTION if key in _NUMBER_PROTO else MISSING
    return MISSING


def split_path(s: str) -> list[str]:
    """json-logic-engine's path splitting: ``a.b`` -> [a, b], ``a\\.b`` -> [a.b]."""
    if "\\" not in s and s.strip("."):
        return s.split(".")
    parts: list[str] = []
    cur = ""
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            nxt = s[i + 1] if i + 1 < len(s) else ""
            if nxt in (".", "/"):
                cur += nxt
                i += 1
            elif nxt == "\\":
                cur += "\\"
                i += 1
            else:
                cur += "\\"
        elif ch == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    if len(parts) != len(s):
        parts.append(cur)
    return parts


def js_to_int(v: Any) -> float:
    """ECMAScript ToIntegerOrInfinity."""
    n = to_number(v)
    if n != n:
        return 0
    if n in (math.inf, -math.inf):
        return n
    return math.trunc(n)
