"""Builders for the string operators: JsonLogic's ``cat`` and ``substr`` (compiled and
interpreted forms) and flagd's ``starts_with`` / ``ends_with`` (``[string, affix]``;
non-strings give null)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import (
    Builder,
    all_const,
    apply_to_operand,
    fn,
    function_op,
    single_operand,
)
from proxy.evaluation.jsonlogic.jsvalue import (
    MISSING,
    Const,
    JSThrow,
    is_object,
    join_strings,
    js_lt,
    js_to_int,
    to_number,
    to_string,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler


# -- cat ----------------------------------------------------------------------------------
def _cat_method(v: Any) -> str:
    if v.__class__ is str:
        return v
    if v.__class__ is list:
        return join_strings(to_string(x) for x in v if x is not None)
    if v is None:
        raise JSThrow("cat of null")
    return to_string(v)


def build_cat(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if cc.interpreted and single_operand(args):
        # the interpreter passes a single operand's value as is: cat of an array joins it
        return apply_to_operand(cc, args, path, _cat_method)
    if args.__class__ is dict and args:
        f = fn(cc.compile(args, path))

        def cat_spread(d: Any) -> Any:
            v = f(d)
            if v.__class__ is str:
                return v
            if v.__class__ is not list:
                if v is None:
                    raise JSThrow("cat of null")
                return to_string(v)
            return join_strings(to_string(x) for x in v if x is not None)

        return cat_spread
    if args.__class__ is not list:
        args = [args]
    parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    if all_const(parts):
        # folded by the reference's interpreter, which skips nulls
        return Const(join_strings(to_string(p.value) for p in parts if p.value is not None))  # type: ignore[union-attr]
    fns = [fn(p) for p in parts]
    if cc.interpreted:  # the interpreter skips nulls
        return lambda d: join_strings([to_string(v) for f in fns if (v := f(d)) is not None])
    # compiled by the reference into '' + a + b: a null prints as "null"
    return lambda d: join_strings([to_string(f(d)) for f in fns])


# -- substr -------------------------------------------------------------------------------
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


# -- starts_with / ends_with (flagd) ------------------------------------------------------
def _make(name: str, starts: bool) -> Any:
    def impl(vals: list[Any]) -> bool | None:
        if len(vals) != 2:
            return None
        s, affix = vals
        if s.__class__ is not str or affix.__class__ is not str:
            return None
        return s.startswith(affix) if starts else s.endswith(affix)

    generic = function_op(name, impl)

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is list and len(args) == 2 and args[1].__class__ is str:
            affix = args[1]
            subject = cc.compile(args[0], f"{path}[0]")
            if subject.__class__ is Const:  # not folded: the reference never folds flagd's operators
                out = impl([subject.value, affix])  # type: ignore[union-attr]
                return lambda d: out
            f = subject

            if starts:

                def starts_with(d: Any) -> bool | None:
                    v = f(d)  # type: ignore[operator]
                    return v.startswith(affix) if v.__class__ is str else None

                return starts_with

            def ends_with(d: Any) -> bool | None:
                v = f(d)  # type: ignore[operator]
                return v.endswith(affix) if v.__class__ is str else None

            return ends_with
        if not (args.__class__ is dict and args):
            n = len(args) if args.__class__ is list else 1
            if n != 2:  # refused by push/validate; the reference answers null at run time
                cc.warn(path, f"{name} takes 2 arguments, got {n}")
        return generic(cc, args, path)

    return build


build_starts_with = _make("starts_with", True)
build_ends_with = _make("ends_with", False)

BUILDERS: dict[str, Builder] = {
    "cat": build_cat,
    "substr": function_op("substr", _substr, 1, 3),
    "starts_with": build_starts_with,
    "ends_with": build_ends_with,
}
