"""Data access operators: var, missing, missing_some (compiled and interpreted forms).

json-logic-engine's compiled ``var`` uses optional chaining (``a?.b ?? default``: null and
missing both give the default); its interpreter returns a null value as null and walks two-
and three-part paths with ``&&`` (a falsy step is the answer). Both are reproduced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import Builder, coerce_array
from proxy.evaluation.jsonlogic.base import fn as _fn
from proxy.evaluation.jsonlogic.jsvalue import (
    FUNCTION,
    MISSING,
    Const,
    JSThrow,
    js_falsy,
    js_get,
    js_le,
    js_lt,
    split_path,
    to_string,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled, Fn
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler

_OBJ_SPECIAL = frozenset(
    ["constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "toString", "valueOf", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__", "__proto__"]
)


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
        # the reference hands var's method the key's value; only a lone key expression may
        # evaluate to a [key, default] pair (with an explicit default, an array key is a path)
        unpack = args.__class__ is not list or len(args) == 1
        return _dynamic_var(cc, cc.compile(key, key_path), default, unpack=unpack)
    if key is None or key == "" or key == []:
        cc.reads_data(None)  # the whole data (the default is ignored, as in the reference)
        return _whole_data
    if key.__class__ in (list, dict):
        return cc.problem(key_path, "var path must be a string or a number")
    parts = split_path(to_string(key))
    cc.reads_data(parts)
    if key.__class__ is not bool:
        cc.prev_writes += 1
    return cc.recorded(_path_var(parts, default))


def _path_var(parts: list[str], default: Compiled) -> Fn:
    """Compiled ``var`` of a literal path: ``d?.a?.b ?? default`` (null and missing alike)."""
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

        if dv is None:
            var1.plain_key = k  # type: ignore[attr-defined]  # lets callers inline the lookup
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
        return _var_interpreted_pair(cc, args, path)
    if args.__class__ is dict and args:
        cc.reads_data(None)
        kf = _fn(cc.compile(args, path))

        def var_dynamic(d: Any) -> Any:
            k = kf(d)
            if k.__class__ is list:
                return _var_method(d, k[0] if k else MISSING, k[1] if len(k) > 1 else None)
            return _var_method(d, k, None)

        return var_dynamic
    return _var_interpreted_key(cc, args, path)


def _var_interpreted_pair(cc: LogicCompiler, args: list[Any], path: str) -> Compiled:
    """Interpreted ``{"var": [key, default]}`` (or ``[]``: the whole data)."""
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


def _var_interpreted_key(cc: LogicCompiler, key: Any, path: str) -> Compiled:
    """Interpreted ``{"var": key}`` of a literal key."""
    if js_falsy(key):  # "", 0, null, false: the whole data
        cc.reads_data(None)
        return _whole_data
    if key.__class__ not in (str, int, float):
        return cc.problem(path, "var path must be a string or a number")
    text = to_string(key)
    if key.__class__ is not str or ("." not in text and "\\" not in text):
        cc.reads_data([text])

        def var_single(d: Any) -> Any:
            if js_falsy(d):
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
            if js_falsy(cur):
                return cur
            for i, p in enumerate(parts):
                cur = js_get(cur, p)
                if cur is MISSING:
                    return None
                if i < last and js_falsy(cur):
                    return cur
            return None if cur is FUNCTION else cur

        return var_chain
    return lambda d: _var_method(d, text, None)


def _dynamic_var(cc: LogicCompiler, key: Compiled, default: Compiled, *, unpack: bool = True) -> Compiled:
    cc.reads_data(None)
    kfn, dfn = _fn(key), _fn(default)

    def var_dynamic(d: Any) -> Any:
        k = kfn(d)
        if unpack and k.__class__ is list:  # [key, default] computed
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


def missing_keys(keys: list[Any], d: Any) -> list[Any]:
    out = []
    for key in keys:
        cur = d
        for p in split_path(to_string(key)):
            if js_falsy(cur):
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


def _direct_keys(cc: LogicCompiler, raw: Any) -> bool:
    """Compiled, one or two dotless string keys are looked up directly (no path split)."""
    return (
        not cc.interpreted
        and raw.__class__ is list
        and 1 <= len(raw) <= 2
        and all(k.__class__ is str and "." not in k for k in raw)
    )


def missing_direct(keys: list[str], d: Any) -> list[Any]:
    if js_falsy(d):
        return list(keys)
    return [k for k in keys if js_get(d, k) is MISSING]


def build_missing(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args == []:
        return Const([])  # the reference folds it: nothing can be missing
    if _direct_keys(cc, args):
        keys_list = list(args)
        for k in keys_list:
            cc.reads_data([k])
        return lambda d: missing_direct(keys_list, d)
    if args.__class__ is list:
        keys: Compiled = cc.compile(args, path)
    elif args.__class__ is dict and args:
        inner = _fn(cc.compile(args, path))
        keys = lambda d: coerce_array(inner(d))  # noqa: E731
    else:
        keys = Const([args])
    _note_keys(cc, keys)
    kfn = _fn(keys)
    return lambda d: missing_keys(kfn(d), d)


def build_missing_some(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is not list or len(args) != 2:
        n = len(args) if args.__class__ is list else 1
        return cc.problem(path, f"missing_some takes 2 arguments (minimum, [keys...]), got {n}")
    # compiled, it is `len - (prev = missing(keys)).length < NEED ? prev : []`: if NEED's own
    # code assigns `prev` (a var does), the answer is that value, not the missing keys
    compiled = args[1].__class__ is list and not cc.interpreted
    cell = cc.cell if compiled else None
    before = cc.prev_writes
    cc.recording += compiled
    try:
        need_c = cc.compile(args[0], f"{path}[0]")
    finally:
        cc.recording -= compiled
    need_writes = compiled and cc.prev_writes > before
    keys = cc.compile(args[1], f"{path}[1]")
    if compiled:
        cc.prev_writes += 1
    _note_keys(cc, keys)
    need, kfn = _fn(need_c), _fn(keys)
    record = cc.records() and compiled

    direct = _direct_keys(cc, args[1])
    # compiled: `found < NEED ? missing : []`; interpreted: `found >= NEED ? [] : missing`
    # (they differ when NEED is not a number: NaN compares false both ways)
    interpreted = cc.interpreted

    def missing_some(d: Any) -> Any:
        ks = kfn(d)
        if ks.__class__ is not list:
            raise JSThrow("missing_some needs a list of keys")
        miss = missing_direct(ks, d) if direct else missing_keys(ks, d)
        if cell is not None:
            cell.value = miss
        found = len(ks) - len(miss)
        if (js_le(need(d), found) if interpreted else not js_lt(found, need(d))):
            if record:
                cell.value = miss  # type: ignore[union-attr]
            return []
        return cell.value if need_writes else miss  # type: ignore[union-attr]

    return missing_some


BUILDERS: dict[str, Builder] = {"var": build_var, "missing": build_missing, "missing_some": build_missing_some}
