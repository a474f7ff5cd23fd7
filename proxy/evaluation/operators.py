"""Builders for the standard JsonLogic operators: data access, logic and comparison.

Each builder gets the compiler, the operator's raw arguments and its path, and returns a
Const or a closure. Arithmetic, string and array operators live in ``operators_values``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.evaluation import operators_values
from proxy.evaluation.jsvalue import (
    FUNCTION,
    MISSING,
    Const,
    JSThrow,
    js_get,
    js_le,
    js_lt,
    loose_eq,
    split_path,
    strict_eq,
    to_number,
    to_string,
    truthy,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic import Compiled, LogicCompiler

_OBJ_SPECIAL = frozenset(
    ["constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "toString", "valueOf", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__", "__proto__"]
)


def _fn(c: Compiled) -> Any:
    from proxy.evaluation.jsonlogic import as_fn

    return as_fn(c)


def _is_const(c: Any) -> bool:
    return c.__class__ is Const


# -- var / missing ------------------------------------------------------------------------
def _lookup(d: Any, parts: list[str]) -> Any:
    """JS ``d?.[p0]?.[p1]...``: MISSING when the chain breaks."""
    cur = d
    for p in parts:
        if cur is None or cur is MISSING:
            return MISSING
        cur = js_get(cur, p)
    return cur


def build_var(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    default: Compiled = Const(None)
    key: Any = args
    if args.__class__ is list:
        if len(args) > 2:
            return cc.problem(path, f"var takes 1 or 2 arguments (path, default), got {len(args)}")
        key = args[0] if args else None
        if len(args) == 2:
            default = cc.compile(args[1], f"{path}[1]")
        key_path = f"{path}[0]"
    else:
        key_path = path
    if key.__class__ is dict and key:
        return _dynamic_var(cc, cc.compile(key, key_path), default)
    if key is None or key == "" or key == []:
        cc.reads_data(None)  # the whole data (the default is ignored, as in the reference)
        return _whole_data
    if key.__class__ in (list, dict):
        return cc.problem(key_path, "var path must be a string or a number")
    parts = split_path(to_string(key))
    cc.reads_data(parts)
    if key.__class__ is not bool:
        cc.prev_writes += 1
    dconst = default.__class__ is Const
    dv = default.value if dconst else None  # type: ignore[union-attr]
    dfn = None if dconst else _fn(default)
    plain = not any(p in _OBJ_SPECIAL for p in parts)
    if len(parts) == 1 and plain and dconst:
        k = parts[0]

        def var1(d: Any) -> Any:
            if d.__class__ is dict:
                v = d.get(k)
                return dv if v is None else v
            v = _lookup(d, parts)
            if v is MISSING or v is None:
                return dv
            return None if v is FUNCTION else v

        return var1
    if plain and dconst:

        def var_path(d: Any) -> Any:
            cur = d
            for p in parts:
                if cur.__class__ is dict:
                    cur = cur.get(p)
                    if cur is None:
                        return dv
                elif cur is None:
                    return dv
                else:
                    cur = js_get(cur, p)
                    if cur is MISSING:
                        return dv
            if cur is None:
                return dv
            return None if cur is FUNCTION else cur

        return var_path

    def var_generic(d: Any) -> Any:
        v = _lookup(d, parts)
        if v is MISSING or v is None:
            return dv if dfn is None else dfn(d)
        return None if v is FUNCTION else v

    return var_generic


def _whole_data(d: Any) -> Any:
    return d


def _dynamic_var(cc: LogicCompiler, key: Compiled, default: Compiled) -> Compiled:
    cc.reads_data(None)
    kfn, dfn = _fn(key), _fn(default)

    def var_dynamic(d: Any) -> Any:
        k = kfn(d)
        if k.__class__ is list:  # [key, default] computed
            dv = k[1] if len(k) > 1 else None
            k = k[0] if k else None
        else:
            dv = dfn(d)
        if k is None or k == "":
            return d
        v = _lookup(d, split_path(to_string(k)))
        if v is MISSING:
            return dv
        return None if v is FUNCTION else v

    return var_dynamic


def _js_falsy(v: Any) -> bool:
    """JS ``!v`` (here ``[]`` and ``{}`` are truthy: plain JS, not JsonLogic)."""
    if v is None or v is False:
        return True
    c = v.__class__
    if c is int or c is float:
        return not (v == v and v != 0)
    if c is str:
        return v == ""
    return False


def missing_keys(keys: list[Any], d: Any) -> list[Any]:
    out = []
    for key in keys:
        cur = d
        for p in split_path(to_string(key)):
            if _js_falsy(cur):
                cur = MISSING
                break
            cur = js_get(cur, p)
            if cur is MISSING:
                break
        if cur is MISSING:
            out.append(key)
    return out


def _note_keys(cc: LogicCompiler, keys: Compiled | None) -> None:
    if keys is None or keys.__class__ is not Const or keys.value.__class__ is not list:  # type: ignore[union-attr]
        cc.reads_data(None)
        return
    for k in keys.value:  # type: ignore[union-attr]
        cc.reads_data(split_path(to_string(k)))


def build_missing(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is list:
        keys: Compiled = cc.compile(args, path)
    elif args.__class__ is dict and args:
        inner = _fn(cc.compile(args, path))
        keys = lambda d: operators_values.coerce_array(inner(d))  # noqa: E731
    else:
        keys = Const([args])
    _note_keys(cc, keys)
    kfn = _fn(keys)
    return lambda d: missing_keys(kfn(d), d)


def build_missing_some(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    parts = cc.args(args, path, "missing_some", 2, 2)
    if parts is None:
        return Const(None)
    need, keys = _fn(parts[0]), parts[1]
    if args[1].__class__ is list:
        cc.prev_writes += 1
    _note_keys(cc, keys)
    kfn = _fn(keys)

    def missing_some(d: Any) -> Any:
        ks = kfn(d)
        if ks.__class__ is not list:
            raise JSThrow("missing_some needs a list of keys")
        miss = missing_keys(ks, d)
        return miss if js_lt(len(ks) - len(miss), need(d)) else []

    return missing_some


# -- logic --------------------------------------------------------------------------------
def _is_true(v: Any) -> bool:
    return v is True or (v is not False and truthy(v))


def build_if(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is not list:
        return cc.problem(path, "if takes an array [condition, then, ..., else]")
    n = len(args)
    if n == 0:
        return Const(None)
    before = cc.prev_writes
    parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    if n < 3:  # the reference interprets short ifs instead of inlining them
        cc.prev_writes = before
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
        return other
    if len(pairs) == 1:
        (c, t) = pairs[0]
        cf = _fn(c)
        if t.__class__ is Const and other.__class__ is Const:
            tv, ev = t.value, other.value  # type: ignore[union-attr]

            def if_cc(d: Any) -> Any:
                v = cf(d)
                return tv if (v is True or (v is not False and truthy(v))) else ev

            return if_cc
        tf, ef = _fn(t), _fn(other)

        def if1(d: Any) -> Any:
            v = cf(d)
            return tf(d) if (v is True or (v is not False and truthy(v))) else ef(d)

        return if1
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
        parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
        cc.prev_writes += 1
        fns = [_fn(p) for p in parts]

        def andor(d: Any) -> Any:
            v = None
            for f in fns:
                v = f(d)
                if _is_true(v) is is_or:
                    return v
            return v

        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: andor(None))
        return andor

    return build


def _build_not(negate: bool) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is list:
            inner: Compiled = cc.compile(args[0], f"{path}[0]") if args else Const(None)
        else:
            inner = cc.compile(args, path)
        if inner.__class__ is Const:
            return Const(_is_true(inner.value) is not negate)  # type: ignore[union-attr]
        f = _fn(inner)
        if negate:
            return lambda d: not _is_true(f(d))
        return lambda d: _is_true(f(d))

    return build


# -- comparison ---------------------------------------------------------------------------
def _throws(v: Any) -> bool:
    """Would json-logic-engine's numeric pre-coercion throw on this operand?"""
    c = v.__class__
    if c is list or c is dict or v is FUNCTION:
        return True
    n = to_number(v)
    return n != n


def _check(a: Any, b: Any) -> tuple[Any, bool]:
    """json-logic-engine's compareCheck: returns (b as compared, plain). ``plain`` means the
    reference would throw; then we compare like plain JavaScript (DESIGN §2)."""
    if (a is None or a.__class__ is str) and (b is None or b.__class__ is str):
        return b, True
    if _throws(a) or b is FUNCTION or b.__class__ in (list, dict) or (a is not None and _throws(b)):
        return b, True
    if b.__class__ is float and b != b:
        return b, True
    if a is None and _js_falsy(b):
        return None, False
    if b is None and _js_falsy(a):
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
            return fast_num(a, b), b
        if ca is str and cb is str:
            return fast_num(a, b), b
        b2, _ = _check(a, b)
        return plain(a, b2), b2

    return step


def _build_compare(op: str) -> Any:
    step = _make_step(op)
    plain = _PLAIN[op]

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is not list:
            return cc.problem(path, f"{op} takes an array of at least 2 operands")
        if len(args) < 2:
            return cc.problem(path, f"{op} takes at least 2 operands, got {len(args)}")
        parts, writes = [], []
        for i, a in enumerate(args):
            before = cc.prev_writes
            parts.append(cc.compile(a, f"{path}[{i}]"))
            writes.append(cc.prev_writes > before)
        cc.prev_writes += 1
        # An operand whose generated code assigns `prev` makes the reference check it against
        # itself, which leaves it unchanged: the comparison is then plain JavaScript.
        steps = [None] + [(lambda a, b: (plain(a, b), b)) if w else step for w in writes[1:]]
        fns = [_fn(p) for p in parts]
        if len(parts) == 2:
            fa, fb = fns
            st = steps[1]
            if writes[1]:
                cmp2 = lambda d: plain(fa(d), fb(d))  # noqa: E731
            elif _is_const(parts[1]) and not _is_const(parts[0]):
                bv = parts[1].value  # type: ignore[union-attr]
                cmp2 = lambda d: st(fa(d), bv)[0]  # noqa: E731
            else:
                cmp2 = lambda d: st(fa(d), fb(d))[0]  # noqa: E731
            if all(_is_const(p) for p in parts):
                return cc.fold(path, lambda: cmp2(None))
            return cmp2
        pairs = list(zip(fns[1:], steps[1:], strict=True))

        def chain(d: Any) -> bool:
            prev = fns[0](d)
            for f, st in pairs:
                ok, prev = st(prev, f(d))
                if not ok:
                    return False
            return True

        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: chain(None))
        return chain

    return build


BUILDERS: dict[str, Any] = {
    "var": build_var,
    "missing": build_missing,
    "missing_some": build_missing_some,
    "if": build_if,
    "?:": build_if,
    "or": _build_andor(True),
    "and": _build_andor(False),
    "!": _build_not(True),
    "!!": _build_not(False),
    **{op: _build_compare(op) for op in _PLAIN},
}
BUILDERS.update(operators_values.BUILDERS)
