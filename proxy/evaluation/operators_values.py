"""Builders for JsonLogic's value operators: arithmetic, min/max, strings, arrays, iterators.

Arithmetic follows json-logic-engine: operands are coerced like JS ``+x``; an object or
array operand, or a NaN result, throws (the engine turns that into a GENERAL error); a
constant operand that can never be a number, or a constant zero divisor, is reported at
load time, as the reference fails those when it compiles the rule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsvalue import (
    FUNCTION,
    MAX_SAFE_INTEGER,
    MISSING,
    Const,
    JSThrow,
    is_object,
    js_lt,
    js_to_int,
    norm_number,
    strict_eq,
    to_number,
    to_string,
    truthy,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic import Compiled, LogicCompiler


def _fn(c: Any) -> Any:
    from proxy.evaluation.jsonlogic import as_fn

    return as_fn(c)


def _all_const(parts: list[Any]) -> bool:
    return all(p.__class__ is Const for p in parts)


def coerce_array(v: Any) -> list[Any]:
    return v if v.__class__ is list else [v]


def function_op(name: str, impl: Any, lo: int = 0, hi: int | None = None) -> Any:
    """An operator whose arguments are all evaluated first (eager), then passed as a list."""

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is dict and args:
            inner = cc.compile(args, path)
            if inner.__class__ is Const:
                return cc.fold(path, lambda: impl(coerce_array(inner.value)))  # type: ignore[union-attr]
            f = _fn(inner)
            return lambda d: impl(coerce_array(f(d)))
        if args.__class__ is not list:
            args = [args]
        parts = cc.args(args, path, name, lo, hi)
        if parts is None:
            return Const(None)
        if _all_const(parts):
            return cc.fold(path, lambda: impl([p.value for p in parts]))
        fns = [_fn(p) for p in parts]
        if len(fns) == 1:
            (f0,) = fns
            return lambda d: impl([f0(d)])
        if len(fns) == 2:
            f0, f1 = fns
            return lambda d: impl([f0(d), f1(d)])
        return lambda d: impl([f(d) for f in fns])

    return build


# -- arithmetic ---------------------------------------------------------------------------
def operand(x: Any) -> int | float:
    """JS ``+precoerceNumber(x)``: objects and NaN throw; strings may still give NaN."""
    c = x.__class__
    if c is int:
        return x
    if c is float:
        if x != x:
            raise JSThrow("operand is NaN")
        return x
    if c is list or c is dict or x is FUNCTION:
        raise JSThrow("operand is not a number")
    return to_number(x)


def result(r: int | float) -> int | float:
    if r != r:
        raise JSThrow("result is not a number")
    if r.__class__ is int and -MAX_SAFE_INTEGER <= r <= MAX_SAFE_INTEGER:
        return r
    return norm_number(r)


def js_mod(a: int | float, b: int | float) -> int | float:
    if b == 0 or a != a or b != b or a in (math.inf, -math.inf):
        return math.nan
    if b in (math.inf, -math.inf):
        return a
    if a.__class__ is int and b.__class__ is int:
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    return math.fmod(a, b)


def _add(vals: list[Any]) -> Any:
    r: int | float = 0
    for v in vals:
        r = r + operand(v)
    return result(r)


def _mul(vals: list[Any]) -> Any:
    r: int | float = 1
    for v in vals:
        r = r * operand(v)
    return result(r)


def _sub(vals: list[Any]) -> Any:
    if not vals:
        raise JSThrow("- needs at least one operand")
    if len(vals) == 1:
        return result(-operand(vals[0]))
    r = operand(vals[0])
    for v in vals[1:]:
        r = r - operand(v)
    return result(r)


def _div(vals: list[Any]) -> Any:
    if not vals:
        raise JSThrow("/ needs at least one operand")
    if len(vals) == 1:
        vals = [1, vals[0]]
    r = operand(vals[0])
    for v in vals[1:]:
        b = operand(v)
        if b == 0 or b != b:
            raise JSThrow("division by zero")
        try:
            r = r / b
        except OverflowError:
            r = math.inf if (r > 0) == (b > 0) else -math.inf
    return result(r)


def _mod(vals: list[Any]) -> Any:
    if len(vals) < 2:
        raise JSThrow("% needs at least two operands")
    r = operand(vals[0])
    for v in vals[1:]:
        r = js_mod(r, operand(v))
    return result(r)


def _arith(name: str, impl: Any, lo: int, zero_divisor: bool) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is dict and args:
            inner = _fn(cc.compile(args, path))
            if name in ("+", "-", "/"):
                cc.prev_writes += 1

            def spread(d: Any) -> Any:
                v = inner(d)
                return impl(v) if v.__class__ is list else impl([v])

            return spread
        if args.__class__ is not list:
            args = [args]
        parts = cc.args(args, path, name, lo)
        if parts is None:
            return Const(None)
        bad = False
        for i, p in enumerate(parts):
            if p.__class__ is not Const:
                continue
            v = p.value  # type: ignore[union-attr]
            n = math.nan if is_object(v) else to_number(v)
            if n != n:
                bad = True
                cc.problem(f"{path}[{i}]", f"{name}: operand {to_string(v)[:40]!r} is not a number")
            elif zero_divisor and n == 0 and (i > 0 or len(parts) == 1):
                bad = True
                cc.problem(f"{path}[{i}]", "division by zero")
        if bad:
            return Const(None)
        if _all_const(parts):
            return cc.fold(path, lambda: impl([p.value for p in parts]))
        fns = [_fn(p) for p in parts]
        if name == "+" and len(fns) == 2:
            fa, fb = fns

            def add2(d: Any) -> Any:
                a, b = fa(d), fb(d)
                if a.__class__ is int and b.__class__ is int:
                    return result(a + b)
                return result(operand(a) + operand(b))

            return add2
        if len(fns) == 2:
            fa, fb = fns
            return lambda d: impl([fa(d), fb(d)])
        return lambda d: impl([f(d) for f in fns])

    return build


def _extreme(is_max: bool) -> Any:
    def impl(vals: list[Any]) -> Any:
        if not vals:
            raise JSThrow("min/max need at least one number")
        best = vals[0]
        for v in vals:
            c = v.__class__
            if c is not int and c is not float:
                raise JSThrow("min/max take numbers only")
            if (v > best) if is_max else (v < best):
                best = v
        return best

    return impl


# -- strings ------------------------------------------------------------------------------
def build_cat(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is dict and args:
        f = _fn(cc.compile(args, path))

        def cat_spread(d: Any) -> Any:
            v = f(d)
            if v.__class__ is str:
                return v
            if v.__class__ is not list:
                if v is None:
                    raise JSThrow("cat of null")
                return to_string(v)
            return "".join(to_string(x) for x in v if x is not None)

        return cat_spread
    if args.__class__ is not list:
        args = [args]
    parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    if _all_const(parts):
        # folded by the reference's interpreter, which skips nulls
        return Const("".join(to_string(p.value) for p in parts if p.value is not None))  # type: ignore[union-attr]
    # compiled by the reference into '' + a + b: a null prints as "null"
    fns = [_fn(p) for p in parts]
    return lambda d: "".join([to_string(f(d)) for f in fns])


def _js_add(a: Any, b: Any) -> Any:
    """JS binary + on a number and a value (for substr's negative length)."""
    if b.__class__ is str or is_object(b):
        return to_string(a) + to_string(b)
    return a + to_number(b)


def js_substr(s: str, start: Any, length: Any) -> str:
    size = len(s)
    i = 0 if start is MISSING else js_to_int(start)
    i = (max(size + i, 0) if i != -math.inf else 0) if i < 0 else min(i, size)
    n = size if length is MISSING else js_to_int(length)
    n = min(max(n, 0), size)
    end = min(i + n, size)
    return s[int(i):int(end)] if end > i else ""


def _substr(vals: list[Any]) -> Any:
    s = vals[0] if vals else None
    if s.__class__ is not str:
        raise JSThrow("substr needs a string")
    start = vals[1] if len(vals) > 1 else MISSING
    end = vals[2] if len(vals) > 2 else MISSING
    if end is not MISSING and js_lt(end, 0):
        r = js_substr(s, start, MISSING)
        return js_substr(r, 0, _js_add(len(r), end))
    return js_substr(s, start, end)


# -- arrays -------------------------------------------------------------------------------
def _same_value_zero(a: Any, b: Any) -> bool:
    if a.__class__ is float and b.__class__ is float and a != a and b != b:
        return True
    return strict_eq(a, b)


def _in(vals: list[Any]) -> bool:
    item = vals[0] if vals else None
    coll = vals[1] if len(vals) > 1 else None
    c = coll.__class__
    if c is list:
        return any(_same_value_zero(item, x) for x in coll)
    if c is str:
        return coll != "" and to_string(item) in coll
    if coll is None or coll is False or ((c is int or c is float) and not (coll == coll and coll != 0)):
        return False
    raise JSThrow("in needs an array or a string")


def build_in(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is list and len(args) == 2:
        parts = cc.args(args, path, "in", 2, 2)
        if parts is None:
            return Const(None)
        a, b = parts
        if b.__class__ is Const and a.__class__ is not Const:
            coll = b.value  # type: ignore[union-attr]
            fa = _fn(a)
            if coll.__class__ is list and coll and all(x.__class__ is str for x in coll):
                strings = frozenset(coll)
                return lambda d: (v := fa(d)).__class__ is str and v in strings
            if coll.__class__ is str:
                if coll == "":
                    return Const(False)
                return lambda d: to_string(fa(d)) in coll
    return function_op("in", _in, 2, 2)(cc, args, path)


def _merge(vals: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in vals:
        if v.__class__ is list:
            out.extend(v)
        else:
            out.append(v)
    return out


def _selection(v: Any) -> list[Any]:
    """JS ``(v || [])`` followed by an array method: a non-array throws."""
    if v.__class__ is list:
        return v
    if v is None or v is False or v == "" or ((v.__class__ in (int, float)) and not (v == v and v != 0)):
        return []
    raise JSThrow("iteration needs an array")


def _no_nested(v: Any) -> Any:
    """json-logic-engine's assertAllowedDepth(v, 0) on reduce accumulators."""
    if v.__class__ is list:
        if any(x.__class__ in (list, dict) for x in v):
            raise JSThrow("reduce accumulator nested too deeply")
    elif v.__class__ is dict and any(x.__class__ in (list, dict) for x in v.values()):
        raise JSThrow("reduce accumulator nested too deeply")
    return v


def _iterator(name: str) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        hi = 3 if name == "reduce" else 2
        if args.__class__ is not list:
            return cc.problem(path, f"{name} takes [array, logic{', initial' if hi == 3 else ''}]")
        if not 2 <= len(args) <= hi:
            want = "2 or 3" if hi == 3 else "2"
            return cc.problem(path, f"{name} takes {want} arguments, got {len(args)}")
        sel = cc.compile(args[0], f"{path}[0]")
        cc.scope += 1
        before = cc.prev_writes
        try:
            mapper = cc.compile(args[1], f"{path}[1]")
        finally:
            cc.scope -= 1
            cc.prev_writes = before  # the reference builds the mapper as a separate function
        if name == "all":
            cc.prev_writes += 1
        init = cc.compile(args[2], f"{path}[2]") if len(args) == 3 else None
        sf, mf = _fn(sel), _fn(mapper)
        if name == "map":
            run = lambda d: [mf(x) for x in _selection(sf(d))]  # noqa: E731
        elif name == "filter":
            run = lambda d: [x for x in _selection(sf(d)) if truthy(mf(x))]  # noqa: E731
        elif name == "some":
            run = lambda d: any(truthy(mf(x)) for x in _selection(sf(d)))  # noqa: E731
        elif name == "none":
            run = lambda d: not any(truthy(mf(x)) for x in _selection(sf(d)))  # noqa: E731
        elif name == "all":

            def run(d: Any) -> Any:
                v = sf(d)
                if v.__class__ is list and not v:
                    return False
                return all(truthy(mf(x)) for x in _selection(v))

        else:
            initf = None if init is None else _fn(init)

            def run(d: Any) -> Any:
                items = _selection(sf(d))
                if initf is None:
                    if not items:
                        raise JSThrow("reduce of an empty array with no initial value")
                    acc, rest = items[0], items[1:]
                else:
                    acc, rest = _no_nested(initf(d)), items
                for x in rest:
                    acc = _no_nested(mf({"accumulator": acc, "current": x}))
                return acc

        if sel.__class__ is Const and (init is None or init.__class__ is Const):
            return cc.fold(path, lambda: run(None))  # the mapper only sees elements
        return run

    return build


BUILDERS: dict[str, Any] = {
    "+": _arith("+", _add, 0, False),
    "*": _arith("*", _mul, 0, False),
    "-": _arith("-", _sub, 1, False),
    "/": _arith("/", _div, 1, True),
    "%": _arith("%", _mod, 2, True),
    "max": function_op("max", _extreme(True), 1),
    "min": function_op("min", _extreme(False), 1),
    "cat": build_cat,
    "substr": function_op("substr", _substr, 1, 3),
    "in": build_in,
    "merge": function_op("merge", _merge),
    "map": _iterator("map"),
    "filter": _iterator("filter"),
    "reduce": _iterator("reduce"),
    "all": _iterator("all"),
    "some": _iterator("some"),
    "none": _iterator("none"),
}
