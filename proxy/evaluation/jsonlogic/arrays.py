"""Builders for JsonLogic's string and array operators: cat, substr, in, merge, and the
iterators map, filter, reduce, all, some, none (compiled and interpreted forms)."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import all_const as _all_const
from proxy.evaluation.jsonlogic.base import (
    apply_to_operand,
    coerce_array,
    function_op,
    single_operand,
)
from proxy.evaluation.jsonlogic.base import fn as _fn
from proxy.evaluation.jsonlogic.jsvalue import (
    MISSING,
    Const,
    JSThrow,
    is_object,
    join_strings,
    js_falsy,
    js_lt,
    js_to_int,
    strict_eq,
    to_number,
    to_string,
    truthy,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.compiler import Compiled, LogicCompiler

__all__ = ["BUILDERS", "coerce_array", "function_op"]


# -- strings ------------------------------------------------------------------------------
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
        f = _fn(cc.compile(args, path))

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
    if _all_const(parts):
        # folded by the reference's interpreter, which skips nulls
        return Const(join_strings(to_string(p.value) for p in parts if p.value is not None))  # type: ignore[union-attr]
    fns = [_fn(p) for p in parts]
    if cc.interpreted:  # the interpreter skips nulls
        return lambda d: join_strings([to_string(v) for f in fns if (v := f(d)) is not None])
    # compiled by the reference into '' + a + b: a null prints as "null"
    return lambda d: join_strings([to_string(f(d)) for f in fns])


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
                k = getattr(fa, "plain_key", None)
                if k is not None:  # {"in": [{"var": k}, [...]]}: the lookup inline

                    def in_var(d: Any) -> bool:
                        v = d.get(k) if d.__class__ is dict else fa(d)
                        return v.__class__ is str and v in strings

                    return in_var
                return lambda d: (v := fa(d)).__class__ is str and v in strings
            if coll.__class__ is str:
                if coll == "":
                    return lambda d: False
                return lambda d: to_string(fa(d)) in coll
        if not cc.interpreted and not (a.__class__ is Const and b.__class__ is Const):
            # compiled by the reference as `(haystack || []).includes(needle)`: the haystack's
            # code runs first, so the needle's var is the last write to the shared `prev`
            # register a comparison around this `in` reads
            fa, fb = _fn(a), _fn(b)

            def in_compiled(d: Any) -> bool:
                coll = fb(d)
                return _in([fa(d), coll])

            return in_compiled
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


def _items(v: Any) -> Any:
    """Interpreted some/all/none: ``for (i < v.length) v[i]`` after ``v || []``."""
    if v.__class__ is list or v.__class__ is str:
        return v
    return ()


def _reduce_idiom(args: list[Any]) -> Any:
    """json-logic-engine's optimizer turns reduce(+/* of accumulator and current) into
    ``+``/``*`` of the array (with 0 / 1 as default initial value)."""
    mapper = args[1]
    if mapper.__class__ is not dict:
        return None
    for op in ("+", "*"):
        terms = mapper.get(op)
        if terms.__class__ is not list or len(terms) != 2:
            continue
        names = [t.get("var") if t.__class__ is dict else None for t in terms]
        if not all(names) or "accumulator" not in names or "current" not in names:
            continue
        init = args[2] if len(args) == 3 else None
        if op == "+":
            init = init if not js_falsy(init) else 0
        elif len(args) < 3:
            init = 1
        return {op: [{op: args[0]}, init]}
    return None



# An accumulator fed back into itself (cat/merge of itself) doubles per element: 2^n for an
# n-item array. Past this many characters + items the reduce fails (GENERAL) instead.
MAX_ACCUMULATOR = 1_000_000


def _no_nested(v: Any) -> Any:
    """json-logic-engine's assertAllowedDepth(v, 0) on reduce accumulators, plus a size cap
    (the reference has none; nothing legitimate comes near it)."""
    c = v.__class__
    if c is list or c is dict:
        values = v if c is list else v.values()
        size = len(v)
        for x in values:
            if x.__class__ in (list, dict):
                raise JSThrow("reduce accumulator nested too deeply")
            if x.__class__ is str:
                size += len(x)
        if size > MAX_ACCUMULATOR:
            raise JSThrow(f"reduce accumulator larger than {MAX_ACCUMULATOR} items/characters")
    elif c is str and len(v) > MAX_ACCUMULATOR:
        raise JSThrow(f"reduce accumulator larger than {MAX_ACCUMULATOR} characters")
    return v


def _iterator(name: str) -> Any:
    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        hi = 3 if name == "reduce" else 2
        if args.__class__ is not list:
            return cc.problem(path, f"{name} takes [array, logic{', initial' if hi == 3 else ''}]")
        if not 2 <= len(args) <= hi:
            want = "2 or 3" if hi == 3 else "2"
            return cc.problem(path, f"{name} takes {want} arguments, got {len(args)}")
        sel = cc.lazy(args[0], f"{path}[0]")
        if name == "reduce" and cc.interpreted:
            idiom = _reduce_idiom(args)
            if idiom is not None:  # the interpreter rewrites sum/product reductions
                return cc.compile(idiom, path)
        cc.scope += 1
        before, outer = cc.prev_writes, (cc.cell, cc.recording)
        cc.cell, cc.recording = [None], 0  # the mapper is a function of its own there
        try:
            # (the interpreter's filter shortcut prepares its mapper up front)
            mapper = (cc.compile if name == "filter" else cc.lazy)(args[1], f"{path}[1]")
        finally:
            cc.scope -= 1
            cc.prev_writes = before
            cc.cell, cc.recording = outer
        # the reference folds an iteration over a constant with a mapper that reads only the
        # element (for reduce, whatever the initial value: it is then read from empty data)
        foldable = sel.__class__ is Const and cc._pure(args[1], True)
        interp = cc.interpreted
        cell = None
        if name == "all":
            cc.prev_writes += 1
            cell = cc.cell if cc.records() else None
        init = cc.compile(args[2], f"{path}[2]") if len(args) == 3 else None
        sf, mf = _charged(_fn(sel)), _fn(mapper)
        # the interpreter loops over `length` for some/all/none: strings iterate their
        # characters, other values nothing; compiled code calls the array method (throws)
        items = _items if interp else _selection
        if name == "map":
            run = lambda d: [mf(x) for x in _selection(sf(d))]  # noqa: E731
        elif name == "filter":
            if interp and mapper.__class__ is Const:
                keep = truthy(mapper.value)  # type: ignore[union-attr]
                run = lambda d: sf(d) if keep else []  # noqa: E731
            else:
                run = lambda d: [x for x in _selection(sf(d)) if truthy(mf(x))]  # noqa: E731
        elif name == "some":
            run = lambda d: any(truthy(mf(x)) for x in items(sf(d)))  # noqa: E731
        elif name == "none":
            run = lambda d: not any(truthy(mf(x)) for x in items(sf(d)))  # noqa: E731
        elif name == "all":

            def run(d: Any) -> Any:
                v = sf(d)
                if cell is not None:
                    cell[0] = v
                if interp and js_falsy(v):  # `v || []` is checked for emptiness there
                    return False
                if v.__class__ is list and not v:
                    return False
                return all(truthy(mf(x)) for x in items(v))

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

        run = _budgeted(run)
        if foldable:
            return cc.fold(path, lambda: run({}))
        return run

    return build


# Nested iterators multiply: map over 1,000 items of a map over 1,000 of a map over 1,000 is a
# billion steps from a 16 KB rule (at load, where constant ones are folded, or per request).
# Every iteration nested in an outermost one shares this budget of elements (per thread).
MAX_ITERATION_STEPS = 1_000_000
_budget = threading.local()


def _budgeted(run: Any) -> Any:
    def guarded(d: Any) -> Any:
        b = _budget
        depth = getattr(b, "depth", 0)
        if depth == 0:
            b.left = MAX_ITERATION_STEPS
        b.depth = depth + 1
        try:
            return run(d)
        finally:
            b.depth = depth

    return guarded


def _charged(sf: Any) -> Any:
    def select(d: Any) -> Any:
        v = sf(d)
        if v.__class__ is list or v.__class__ is str:
            b = _budget
            b.left -= len(v)
            if b.left < 0:
                raise JSThrow(f"iteration too large (more than {MAX_ITERATION_STEPS} elements)")
        return v

    return select


BUILDERS: dict[str, Any] = {
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
