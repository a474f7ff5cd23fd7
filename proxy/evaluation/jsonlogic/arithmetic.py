"""Arithmetic operators (+ - * / %, min, max), compiled and interpreted forms.

Following json-logic-engine: operands are coerced like JS ``+x``; an object or array
operand, or a NaN result, throws (the engine turns that into a GENERAL error). In compiled
rules a constant operand that can never be a number, or a constant zero divisor, is reported
at load time (the reference fails those when it compiles); below a short ``if`` the
reference interprets, and fails at run time instead, and its ``+``/``-`` look inside a
single operand's array value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import (
    Builder,
    apply_to_operand,
    coerce_array,
    function_op,
    single_operand,
)
from proxy.evaluation.jsonlogic.base import all_const as _all_const
from proxy.evaluation.jsonlogic.base import fn as _fn
from proxy.evaluation.jsonlogic.jsvalue import (
    FUNCTION,
    MAX_SAFE_INTEGER,
    Const,
    JSThrow,
    is_object,
    js_falsy,
    norm_number,
    to_number,
    to_string,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler


# -- arithmetic ---------------------------------------------------------------------------
def operand(x: Any) -> int | float:
    """JS ``+precoerceNumber(x)``: objects and NaN throw; strings may still give NaN."""
    c = x.__class__
    if c is int:
        # JS numbers are doubles: an integer past 2^53 is rounded before any arithmetic
        return x if -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER else float(x)
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


def plus_method(v: Any) -> Any:
    """The interpreter's ``+`` on one value (a single operand is not wrapped in a list)."""
    if js_falsy(v):
        return 0
    c = v.__class__
    if c is list:
        r: int | float = 0
        for x in v:
            if is_object(x):
                raise JSThrow("operand is not a number")
            r = r + to_number(x)
        return result(r)
    if c is dict or v is FUNCTION:
        raise JSThrow("operand is not a number")
    return result(to_number(v))


def minus_method(v: Any) -> Any:
    """The interpreter's ``-`` on one value."""
    if js_falsy(v):
        return 0
    c = v.__class__
    if c is list:
        if v and is_object(v[0]):
            raise JSThrow("operand is not a number")
        if not v:
            raise JSThrow("- needs at least one operand")
        if len(v) == 1:
            return norm_number(-to_number(v[0]))
        r = to_number(v[0])
        for x in v[1:]:
            if is_object(x):
                raise JSThrow("operand is not a number")
            r = r - to_number(x)
        return result(r)
    if c is dict or v is FUNCTION:
        raise JSThrow("operand is not a number")
    return result(-to_number(v))


def _div_interpreted(vals: list[Any]) -> Any:
    if vals and is_object(vals[0]):
        raise JSThrow("operand is not a number")
    if not vals:
        raise JSThrow("/ needs at least one operand")
    if len(vals) == 1:
        n = to_number(vals[0])
        if n != n or n == 0:
            raise JSThrow("division by zero")
        return norm_number(1 / n)
    r = to_number(vals[0])
    for v in vals[1:]:
        if is_object(v) or js_falsy(v):
            raise JSThrow("division by zero")
        b = to_number(v)
        if b == 0:  # a truthy zero ("0"): JS gives +-Infinity or NaN
            r = math.nan if r == 0 or r != r else math.copysign(math.inf, r) * math.copysign(1, b)
        else:
            try:
                r = r / b
            except OverflowError:
                r = math.inf if (r > 0) == (b > 0) else -math.inf
    if r != r or r == math.inf:
        raise JSThrow("division result is not a finite number")
    return norm_number(r)


def _arith_interpreted(cc: LogicCompiler, name: str, args: Any, path: str, impl: Any) -> Compiled:
    """Arithmetic as the reference's interpreter runs it: ``+``/``-`` look inside a single
    operand's value; no load-time operand checks: the interpreter fails at run time (GENERAL),
    even for a literal zero divisor."""
    method = {"+": plus_method, "-": minus_method}.get(name)
    if method is not None and single_operand(args):
        return apply_to_operand(cc, args, path, method)
    if args.__class__ is dict and args:
        g = _fn(cc.compile(args, path))
        return lambda d: impl(coerce_array(g(d)))
    if args.__class__ is not list:
        args = [args]
    parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    if name in ("+", "-"):
        impl = {"+": plus_method, "-": minus_method}[name]
    elif name == "/":
        impl = _div_interpreted
    if _all_const(parts):
        return cc.fold(path, lambda: impl([p.value for p in parts]))
    fns = [_fn(p) for p in parts]
    return lambda d: impl([f(d) for f in fns])


def _arith(name: str, impl: Any, lo: int, zero_divisor: bool) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if cc.interpreted:
            return _arith_interpreted(cc, name, args, path, impl)
        if args.__class__ is dict and args:
            inner = _fn(cc.compile(args, path))
            cell = None
            if name in ("+", "-", "/"):
                cc.prev_writes += 1
                cell = cc.cell if cc.records() else None

            def spread(d: Any) -> Any:
                v = inner(d)
                if cell is not None:
                    cell.value = v
                return impl(v) if v.__class__ is list else impl([v])

            return spread
        if args.__class__ is not list:
            args = [args]
        parts = cc.args(args, path, name, lo)
        if parts is None or _bad_literals(cc, name, args, parts, path, zero_divisor):
            return Const(None)
        if _all_const(parts):
            return cc.fold(path, lambda: impl([p.value for p in parts]))
        fns = [_fn(p) for p in parts]
        if name == "+" and len(fns) == 2:
            fa, fb = fns

            def add2(d: Any) -> Any:
                a, b = fa(d), fb(d)
                if (a.__class__ is int and b.__class__ is int
                        and -MAX_SAFE_INTEGER <= a <= MAX_SAFE_INTEGER
                        and -MAX_SAFE_INTEGER <= b <= MAX_SAFE_INTEGER):
                    return result(a + b)
                return result(operand(a) + operand(b))

            return add2
        if len(fns) == 2:
            fa, fb = fns
            return lambda d: impl([fa(d), fb(d)])
        return lambda d: impl([f(d) for f in fns])

    return build


def _bad_literals(cc: LogicCompiler, name: str, args: list[Any], parts: list[Compiled], path: str,
                  zero_divisor: bool) -> bool:
    """Report what json-logic-engine rejects while compiling: literal arrays/objects and
    strings that are not numbers; for /, a divisor that is literally zero. (A folded array or
    a null/false divisor only fails when evaluated.)"""
    bad = False
    for i, p in enumerate(parts):
        if p.__class__ is not Const:
            continue
        v, raw = p.value, args[i]  # type: ignore[union-attr]
        if raw.__class__ is list or raw == {} or (v.__class__ is str and to_number(v) != to_number(v)):
            bad = True
            cc.problem(f"{path}[{i}]", f"{name}: operand {to_string(v)[:40]!r} is not a number")
        elif zero_divisor and (i > 0 or len(parts) == 1) and (
            (v.__class__ in (int, float, str)) and to_number(v) == 0
        ):
            bad = True
            cc.problem(f"{path}[{i}]", "division by zero")
    return bad


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


BUILDERS: dict[str, Builder] = {
    "+": _arith("+", _add, 0, False),
    "*": _arith("*", _mul, 0, False),
    "-": _arith("-", _sub, 1, False),
    "/": _arith("/", _div, 1, True),
    "%": _arith("%", _mod, 2, False),
    "max": function_op("max", _extreme(True), 1),
    "min": function_op("min", _extreme(False), 1),
}
