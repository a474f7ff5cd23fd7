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
    if cc.interpreted:
        return _var_interpreted(cc, args, path)
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

        return cc.recorded(var1)
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

        return cc.recorded(var_path)

    def var_generic(d: Any) -> Any:
        v = _lookup(d, parts)
        if v is MISSING or v is None:
            return dv if dfn is None else dfn(d)
        return None if v is FUNCTION else v

    return cc.recorded(var_generic)


def _whole_data(d: Any) -> Any:
    return d


def _var_method(d: Any, key: Any, dv: Any) -> Any:
    """json-logic-engine's interpreted var: missing -> default, but a null value stays null."""
    if key is None or key is MISSING or key == "":
        return d
    cur = d
    for p in split_path(to_string(key)):
        if cur is None or cur is MISSING:
            return dv
        cur = js_get(cur, p)
        if cur is MISSING:
            return dv
    return None if cur is FUNCTION else cur


def _var_interpreted(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    """var as the reference's interpreter (its optimizer) runs it."""
    if args.__class__ is list and len(args) == 1 and args[0].__class__ is not list:
        args = args[0]
    if args.__class__ is list:
        if len(args) > 2:
            return cc.problem(path, f"var takes 1 or 2 arguments (path, default), got {len(args)}")
        key = cc.compile(args[0], f"{path}[0]") if args else Const(MISSING)
        default = cc.compile(args[1], f"{path}[1]") if len(args) == 2 else Const(None)
        if key.__class__ is Const and key.value.__class__ in (str, int, float):  # type: ignore[union-attr]
            cc.reads_data(split_path(to_string(key.value)) if key.value != "" else None)  # type: ignore[union-attr]
        else:
            cc.reads_data(None)
        kf, df = _fn(key), _fn(default)
        return lambda d: _var_method(d, kf(d), df(d))
    if args.__class__ is dict and args:
        cc.reads_data(None)
        kf = _fn(cc.compile(args, path))

        def var_dynamic(d: Any) -> Any:
            k = kf(d)
            if k.__class__ is list:
                return _var_method(d, k[0] if k else MISSING, k[1] if len(k) > 1 else None)
            return _var_method(d, k, None)

        return var_dynamic
    key = args
    if _js_falsy(key):  # "", 0, null, false: the whole data
        cc.reads_data(None)
        return _whole_data
    if key.__class__ not in (str, int, float):
        return cc.problem(path, "var path must be a string or a number")
    text = to_string(key)
    if key.__class__ is not str or ("." not in text and "\\" not in text):
        cc.reads_data([text])

        def var_single(d: Any) -> Any:
            if _js_falsy(d):
                return None
            v = js_get(d, text)
            return None if v is MISSING or v is FUNCTION else v

        return var_single
    parts = split_path(text)
    cc.reads_data(parts)
    if len(parts) in (2, 3) and not text.startswith("../"):
        last = len(parts) - 1

        def var_chain(d: Any) -> Any:
            # `data && data[a] && data[a][b]`: a falsy step is the answer itself
            cur = d
            if _js_falsy(cur):
                return cur
            for i, p in enumerate(parts):
                cur = js_get(cur, p)
                if cur is MISSING:
                    return None
                if i < last and _js_falsy(cur):
                    return cur
            return None if cur is FUNCTION else cur

        return var_chain
    return lambda d: _var_method(d, text, None)


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

    cell = cc.cell if cc.records() and args[1].__class__ is list else None

    def missing_some(d: Any) -> Any:
        ks = kfn(d)
        if ks.__class__ is not list:
            raise JSThrow("missing_some needs a list of keys")
        miss = missing_keys(ks, d)
        if cell is not None:
            cell[0] = miss
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
    before, was = cc.prev_writes, cc.interpreted
    if n < 3:  # the reference interprets short ifs (and all below them) instead of compiling
        cc.interpreted = True
    try:
        parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    finally:
        cc.interpreted = was
    if n < 3:
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
        return cc.recorded(andor)

    return build


def _build_not(negate: bool) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        unwrap = False  # the interpreter looks inside an array value: ! [x] tests x
        if args.__class__ is list:
            inner: Compiled = cc.compile(args[0], f"{path}[0]") if args else Const(None)
            unwrap = cc.interpreted and len(args) == 1 and args[0].__class__ is not list
        else:
            inner = cc.compile(args, path)
            unwrap = cc.interpreted
        if unwrap:
            f0 = _fn(inner)
            inner_v = inner
            inner = (lambda d: _first(f0(d))) if inner_v.__class__ is not Const else Const(_first(inner_v.value))  # type: ignore[union-attr]
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
    strict = op in ("===", "!==")

    def checked(p: Any, b: Any) -> Any:
        return b if strict else _check(p, b)[0]

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is not list:
            return cc.problem(path, f"{op} takes an array of at least 2 operands")
        if len(args) < 2:
            return cc.problem(path, f"{op} takes at least 2 operands, got {len(args)}")
        record_self = cc.records()
        parts, writes = [], []
        for i, a in enumerate(args):
            before = cc.prev_writes
            cc.recording += i > 0
            try:
                parts.append(cc.compile(a, f"{path}[{i}]"))
            finally:
                cc.recording -= i > 0
            writes.append(cc.prev_writes > before and not cc.interpreted)
        cc.prev_writes += 1
        if cc.interpreted:  # the interpreter compares each pair of raw operands
            return _interpreted_chain(cc, path, parts, step)
        fns = [_fn(p) for p in parts]
        cell = cc.cell
        # json-logic-engine compiles `a OP b` to `(prev = a) OP compareCheck(b, prev)`: `prev`
        # is whatever b's own code assigned last (a var does), else a.
        if len(parts) == 2 and not writes[1]:
            fa, fb = fns
            if _is_const(parts[1]) and not _is_const(parts[0]):
                bv = parts[1].value  # type: ignore[union-attr]
                cmp2 = lambda d: step(fa(d), bv)[0]  # noqa: E731
            else:
                cmp2 = lambda d: step(fa(d), fb(d))[0]  # noqa: E731
            if all(_is_const(p) for p in parts):
                return cc.fold(path, lambda: cmp2(None))
            if record_self:

                def cmp2_recorded(d: Any) -> bool:
                    a = fa(d)
                    cell[0] = a
                    return step(a, fb(d))[0]  # type: ignore[no-any-return]

                return cmp2_recorded
            return cmp2
        if len(parts) == 2:
            fa, fb = fns

            def cmp2_register(d: Any) -> bool:
                a = fa(d)
                cell[0] = a
                b = fb(d)
                return plain(a, checked(cell[0], b))  # type: ignore[no-any-return]

            return cmp2_register
        rest = list(zip(fns[1:], writes[1:], strict=True))

        def chain(d: Any) -> bool:
            left = fns[0](d)
            cell[0] = left
            for f, w in rest:
                p = left
                b = f(d)
                if w:
                    p = cell[0]
                b2 = checked(p, b)
                cell[0] = b2
                if not plain(left, b2):
                    return False
                left = b2
            return True

        if all(_is_const(p) for p in parts):
            return cc.fold(path, lambda: chain(None))
        return chain

    return build


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
