"""Builders for JsonLogic's logic and comparison operators: if, and/or, !/!!, == ... >=.

Each builder gets the compiler, the operator's raw arguments and its path, and returns a
Const or a closure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import Builder, Register
from proxy.evaluation.jsonlogic.base import fn as _fn
from proxy.evaluation.jsonlogic.base import is_const as _is_const
from proxy.evaluation.jsonlogic.jsvalue import (
    FUNCTION,
    MAX_SAFE_INTEGER,
    Const,
    js_falsy,
    js_le,
    js_lt,
    loose_eq,
    strict_eq,
    to_number,
    truthy,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled, Fn
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler


# -- logic --------------------------------------------------------------------------------
def _is_true(v: Any) -> bool:
    return v is True or (v is not False and truthy(v))


def build_if(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is not list:
        return cc.problem(path, "if takes an array [condition, then, ..., else]")
    n = len(args)
    if n == 0:
        return Const(None)
    parts = _compile_if_args(cc, args, path)
    if n == 1:
        return parts[0]
    if n % 2 == 0:
        parts.append(Const(None))
    conds, thens, other = parts[0:-1:2], parts[1:-1:2], parts[-1]
    trace = cc.trace
    if trace is not None:
        return _traced_if(trace, path, [_fn(c) for c in conds], [_fn(t) for t in thens], _fn(other))
    # drop branches whose condition is a constant: false ones vanish, a true one ends the chain
    pairs = []
    for c, t in zip(conds, thens, strict=True):
        if c.__class__ is Const:
            if truthy(c.value):  # type: ignore[union-attr]
                other = t
                break
            continue
        pairs.append((c, t))
    if not pairs:
        if other.__class__ is Const and not all(_is_const(p) for p in parts):
            return _fn(other)  # still not a constant for the reference (it reads data)
        return other
    if len(pairs) == 1:
        return _if_one(*pairs[0], other)
    return _if_chain(pairs, other)


def _compile_if_args(cc: LogicCompiler, args: list[Any], path: str) -> list[Compiled]:
    n = len(args)
    before, was = cc.prev_writes, cc.interpreted
    outcome = cc.result_here  # this if is the rule's outcome: so are its branches
    if n < 3:  # the reference interprets short ifs (and all below them) instead of compiling
        cc.interpreted = True
    try:
        # interpreted, only a 3-argument if prepares all its arguments up front
        compile_arg = cc.lazy if cc.interpreted and n != 3 else cc.compile
        parts = []
        for i, a in enumerate(args):
            cc.in_result = outcome and (i % 2 == 1 or (i == n - 1 and n % 2 == 1))
            parts.append(compile_arg(a, f"{path}[{i}]"))
    finally:
        cc.interpreted = was
        cc.in_result = False
    if n < 3:
        cc.prev_writes = before
    return parts


def _if_one(c: Compiled, t: Compiled, other: Compiled) -> Fn:
    cf = _fn(c)
    if t.__class__ is Const and other.__class__ is Const:
        tv, ev = t.value, other.value  # type: ignore[union-attr]
        andor = getattr(cf, "andor", None)
        if andor is not None:  # {"if": [{"or"/"and": [a, b]}, "on", "off"]}: one call, not two
            return _if_andor(*andor, tv, ev)

        def if_cc(d: Any) -> Any:
            v = cf(d)
            return tv if (v is True or (v is not False and truthy(v))) else ev

        return if_cc
    tf, ef = _fn(t), _fn(other)

    def if1(d: Any) -> Any:
        v = cf(d)
        return tf(d) if (v is True or (v is not False and truthy(v))) else ef(d)

    return if1


def _if_andor(is_or: bool, f0: Fn, f1: Fn, tv: Any, ev: Any) -> Fn:
    """``_if_one`` of constants over a two-operand or/and, the operator inline (``_or``)."""
    if is_or:

        def if_or2(d: Any) -> Any:
            v = f0(d)
            if not (v is True or (v is not False and v is not None and truthy(v))):
                v = f1(d)
            return tv if (v is True or (v is not False and truthy(v))) else ev

        return if_or2

    def if_and2(d: Any) -> Any:
        v = f0(d)
        if not (v is False or v is None or (v is not True and not truthy(v))):
            v = f1(d)
        return tv if (v is True or (v is not False and truthy(v))) else ev

    return if_and2


def _if_chain(pairs: list[tuple[Compiled, Compiled]], other: Compiled) -> Fn:
    fpairs = [(_fn(c), _fn(t)) for c, t in pairs]
    ef = _fn(other)

    def if_n(d: Any) -> Any:
        for cf, tf in fpairs:
            v = cf(d)
            if v is True or (v is not False and truthy(v)):
                return tf(d)
        return ef(d)

    return if_n


def _traced_if(trace: list[str], path: str, conds: list[Any], thens: list[Any], other: Any) -> Any:
    def traced_if(d: Any) -> Any:
        for i, (cf, tf) in enumerate(zip(conds, thens, strict=True)):
            hit = _is_true(cf(d))
            trace.append(f"{path}[{2 * i}] condition -> {'true' if hit else 'false'}")
            if hit:
                return tf(d)
        trace.append(f"{path} no condition matched -> else branch")
        return other(d)

    return traced_if


def _build_andor(is_or: bool) -> Any:
    name = "or" if is_or else "and"

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is not list:
            return cc.problem(path, f"{name} takes an array")
        if not args:
            return Const(None)
        parts = [cc.lazy(a, f"{path}[{i}]") for i, a in enumerate(args)]
        cc.prev_writes += 1
        fns = [_fn(p) for p in parts]
        andor = _or(fns) if is_or else _and(fns)
        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: andor(None))
        return cc.recorded(andor)

    return build


# and/or with the truth test inline (``_is_true``: True, or not False/None and truthy) and the
# common two-operand case unrolled: hot in rules (a call per operand saved).
def _or(fns: list[Fn]) -> Fn:
    if len(fns) == 2:
        f0, f1 = fns

        def or2(d: Any) -> Any:
            v = f0(d)
            if v is True or (v is not False and v is not None and truthy(v)):
                return v
            return f1(d)

        or2.andor = (True, f0, f1)  # type: ignore[attr-defined]  # lets an if inline it
        return or2

    def or_n(d: Any) -> Any:
        v = None
        for f in fns:
            v = f(d)
            if v is True or (v is not False and v is not None and truthy(v)):
                return v
        return v

    return or_n


def _and(fns: list[Fn]) -> Fn:
    if len(fns) == 2:
        f0, f1 = fns

        def and2(d: Any) -> Any:
            v = f0(d)
            if v is False or v is None or (v is not True and not truthy(v)):
                return v
            return f1(d)

        and2.andor = (False, f0, f1)  # type: ignore[attr-defined]  # lets an if inline it
        return and2

    def and_n(d: Any) -> Any:
        v = None
        for f in fns:
            v = f(d)
            if v is False or v is None or (v is not True and not truthy(v)):
                return v
        return v

    return and_n


def _build_not(negate: bool) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        unwrap = False  # the interpreter looks inside an array value: ! [x] tests x
        rest: list[Any] = []
        if args.__class__ is list:
            inner: Compiled = cc.compile(args[0], f"{path}[0]") if args else Const(None)
            unwrap = cc.interpreted and len(args) == 1 and args[0].__class__ is not list
            if cc.interpreted and len(args) > 1:
                # the interpreter evaluates every argument (their errors count), then tests
                # the first; compiled code only ever evaluates the first
                rest = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args[1:], 1)]
        else:
            inner = cc.compile(args, path)
            unwrap = cc.interpreted
        if unwrap:
            f0 = _fn(inner)
            inner_v = inner
            inner = (lambda d: _first(f0(d))) if inner_v.__class__ is not Const else Const(_first(inner_v.value))  # type: ignore[union-attr]
        if any(r.__class__ is not Const for r in rest):
            first, others = _fn(inner), [_fn(r) for r in rest]

            def first_of_all(d: Any) -> Any:
                v = first(d)
                for g in others:
                    g(d)
                return v

            inner = first_of_all
        if inner.__class__ is Const:
            return Const(_is_true(inner.value) is not negate)  # type: ignore[union-attr]
        f = _fn(inner)
        if negate:
            return lambda d: not _is_true(f(d))
        return lambda d: _is_true(f(d))

    return build


def _first(v: Any) -> Any:
    if v.__class__ is list:
        return v[0] if v else None
    return v


# -- comparison ---------------------------------------------------------------------------
def _throws(v: Any) -> bool:
    """Would json-logic-engine's numeric pre-coercion throw on this operand?"""
    c = v.__class__
    if c is list or c is dict or v is FUNCTION:
        return True
    n = to_number(v)
    return n != n


def _check(a: Any, b: Any) -> tuple[Any, bool]:
    """json-logic-engine's compareCheck(b, prev=a): returns (b as compared, plain). ``plain``
    means the reference would throw; then we compare like plain JavaScript (DESIGN §2)."""
    if (a is None or a.__class__ is str) and (b is None or b.__class__ is str):
        return b, True
    if _throws(a) or b is FUNCTION or b.__class__ in (list, dict) or (a is not None and _throws(b)):
        return b, True
    if b.__class__ is float and b != b:
        return b, True
    if a is None and js_falsy(b):
        return None, False
    if b is None and js_falsy(a):
        return 0, False
    return b, False


_PLAIN = {
    "==": loose_eq,
    "!=": lambda a, b: not loose_eq(a, b),
    "<": js_lt,
    "<=": js_le,
    ">": lambda a, b: js_lt(b, a),
    ">=": lambda a, b: js_le(b, a),
    "===": strict_eq,
    "!==": lambda a, b: not strict_eq(a, b),
}


def _make_step(op: str) -> Any:
    plain = _PLAIN[op]
    if op in ("===", "!=="):
        return lambda a, b: (plain(a, b), b)
    fast_num = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}[op]

    def step(a: Any, b: Any) -> tuple[bool, Any]:
        ca, cb = a.__class__, b.__class__
        if (ca is int or ca is float) and (cb is int or cb is float):
            # JS compares doubles: integers past 2^53 are rounded first
            if ca is int and not -MAX_SAFE_INTEGER <= a <= MAX_SAFE_INTEGER:
                a = float(a)
            if cb is int and not -MAX_SAFE_INTEGER <= b <= MAX_SAFE_INTEGER:
                b = float(b)
            return fast_num(a, b), b
        if ca is str and cb is str:
            return fast_num(a, b), b
        b2, _ = _check(a, b)
        return plain(a, b2), b2

    return step


def _build_compare(op: str) -> Builder:
    step = _make_step(op)
    plain = _PLAIN[op]
    strict = op in ("===", "!==")

    def checked(p: Any, b: Any) -> Any:
        return b if strict else _check(p, b)[0]

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is not list:
            return cc.problem(path, f"{op} takes an array of at least 2 operands")
        if len(args) < 2:
            return cc.problem(path, f"{op} takes at least 2 operands, got {len(args)}")
        record_self = cc.records()
        parts, writes = _compile_operands(cc, args, path)
        cc.compared_clock(op, args, parts)  # a literal time threshold: a cache boundary
        cc.prev_writes += 1
        if cc.interpreted:  # the interpreter compares each pair of raw operands
            return _interpreted_chain(cc, path, parts, step)
        # json-logic-engine compiles `a OP b` to `(prev = a) OP compareCheck(b, prev)`: `prev`
        # is whatever b's own code assigned last (a var does), else a.
        if len(parts) == 2 and not writes[1]:
            return _compiled_pair(cc, op, step, path, parts, record_self)
        fns = [_fn(p) for p in parts]
        if len(parts) == 2:
            return _register_pair(fns[0], fns[1], cc.cell, plain, checked)
        chain = _register_chain(fns, writes, cc.cell, plain, checked)
        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: chain(None))
        return chain

    return build


def _compile_operands(cc: LogicCompiler, args: list[Any], path: str) -> tuple[list[Compiled], list[bool]]:
    """The operands, and for each whether its code assigns the `prev` register (compiled
    only: a right-hand operand's assignments are recorded for the comparison to read)."""
    parts, writes = [], []
    for i, a in enumerate(args):
        before = cc.prev_writes
        cc.recording += i > 0
        try:
            parts.append(cc.compile(a, f"{path}[{i}]"))
        finally:
            cc.recording -= i > 0
        writes.append(cc.prev_writes > before and not cc.interpreted)
    return parts, writes


def _compiled_pair(cc: LogicCompiler, op: str, step: Any, path: str, parts: list[Compiled],
                   record_self: bool) -> Compiled:
    """``a OP b`` where b's code leaves `prev` alone: `prev` is a, so step() compares them."""
    fa, fb = _fn(parts[0]), _fn(parts[1])
    if _is_const(parts[1]) and not _is_const(parts[0]):
        bv = parts[1].value  # type: ignore[union-attr]
        cmp2 = lambda d: step(fa(d), bv)[0]  # noqa: E731
        if bv.__class__ is str and op in ("==", "===", "!=", "!=="):
            # the common `var == "literal"`: two strings compare plainly
            equal = op in ("==", "===")

            def cmp_str(d: Any) -> bool:
                a = fa(d)
                if a.__class__ is str:
                    return (a == bv) is equal
                return step(a, bv)[0]  # type: ignore[no-any-return]

            cmp2 = cmp_str
            k = getattr(fa, "plain_key", None)
            if k is not None:  # {"==": [{"var": k}, "literal"]}: the lookup inline too

                def cmp_var_str(d: Any) -> bool:
                    a = d.get(k) if d.__class__ is dict else fa(d)
                    if a.__class__ is str:
                        return (a == bv) is equal
                    return step(a, bv)[0]  # type: ignore[no-any-return]

                cmp2 = cmp_var_str
    else:
        cmp2 = lambda d: step(fa(d), fb(d))[0]  # noqa: E731
    if all(_is_const(p) for p in parts):
        return cc.fold(path, lambda: cmp2(None))
    if record_self:
        cell = cc.cell

        def cmp2_recorded(d: Any) -> bool:
            a = fa(d)
            cell.value = a
            return step(a, fb(d))[0]  # type: ignore[no-any-return]

        return cmp2_recorded
    return cmp2


def _register_pair(fa: Fn, fb: Fn, cell: Register, plain: Any, checked: Any) -> Fn:
    """``a OP b`` where b's code assigns `prev`: b is checked against what it assigned."""

    def cmp2_register(d: Any) -> bool:
        a = fa(d)
        cell.value = a
        b = fb(d)
        return plain(a, checked(cell.value, b))  # type: ignore[no-any-return]

    return cmp2_register


def _register_chain(fns: list[Fn], writes: list[bool], cell: Register, plain: Any,
                    checked: Any) -> Fn:
    """``a OP b OP c ...``: each operand is checked against `prev`, which is the previous
    operand unless its own code assigned the register."""
    rest = list(zip(fns[1:], writes[1:], strict=True))

    def chain(d: Any) -> bool:
        left = fns[0](d)
        cell.value = left
        for f, w in rest:
            p = left
            b = f(d)
            if w:
                p = cell.value
            b2 = checked(p, b)
            cell.value = b2
            if not plain(left, b2):
                return False
            left = b2
        return True

    return chain


def _interpreted_chain(cc: LogicCompiler, path: str, parts: list[Any], step: Any) -> Compiled:
    fns = [_fn(p) for p in parts]
    if len(fns) == 2:
        fa, fb = fns
        cmp2 = lambda d: step(fa(d), fb(d))[0]  # noqa: E731
        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: cmp2(None))
        return cmp2

    def chain(d: Any) -> bool:
        prev = fns[0](d)
        for f in fns[1:]:
            cur = f(d)
            if not step(prev, cur)[0]:
                return False
            prev = cur
        return True

    if all(_is_const(p) for p in parts):
        return cc.fold(path, lambda: chain(None))
    return chain


BUILDERS: dict[str, Builder] = {
    "if": build_if,
    "?:": build_if,
    "or": _build_andor(True),
    "and": _build_andor(False),
    "!": _build_not(True),
    "!!": _build_not(False),
    **{op: _build_compare(op) for op in _PLAIN},
}
