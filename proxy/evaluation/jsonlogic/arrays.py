"""Builders for JsonLogic's array operators: in, merge, and the iterators map, filter,
reduce, all, some, none (compiled and interpreted forms)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import Builder, Register, function_op
from proxy.evaluation.jsonlogic.base import fn as _fn
from proxy.evaluation.jsonlogic.jsvalue import (
    Const,
    JSThrow,
    js_falsy,
    strict_eq,
    to_string,
    truthy,
)

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled, Fn
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler


# -- in / merge ---------------------------------------------------------------------------
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
            if coll.__class__ is list and coll and set(map(type, coll)) == {str}:
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


# -- iterators ----------------------------------------------------------------------------
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


def _iterator(name: str) -> Builder:
    hi = 3 if name == "reduce" else 2

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
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
        # (the interpreter's filter shortcut prepares its mapper up front)
        mapper = _compile_mapper(cc, args[1], f"{path}[1]", eager=name == "filter")
        # the reference folds an iteration over a constant with a mapper that reads only the
        # element (for reduce, whatever the initial value: it is then read from empty data)
        foldable = sel.__class__ is Const and cc.is_deterministic(args[1], True)
        cell = None
        if name == "all":
            cc.prev_writes += 1
            cell = cc.cell if cc.records() else None
        init = cc.compile(args[2], f"{path}[2]") if len(args) == 3 else None
        run = _budgeted(_loop(name, _charged(_fn(sel)), mapper, init, cc.interpreted, cell))
        if foldable:
            return cc.fold(path, lambda: run({}))
        return run

    return build


def _compile_mapper(cc: LogicCompiler, node: Any, path: str, *, eager: bool) -> Compiled:
    """The mapper is a function of its own in the reference's generated code: ``var`` reads
    the element there, and it has its own `prev` register."""
    cc.scope += 1
    before, outer = cc.prev_writes, (cc.cell, cc.recording)
    cc.cell, cc.recording = Register(), 0
    try:
        return (cc.compile if eager else cc.lazy)(node, path)
    finally:
        cc.scope -= 1
        cc.prev_writes = before
        cc.cell, cc.recording = outer


def _loop(name: str, sf: Fn, mapper: Compiled, init: Compiled | None, interp: bool,
          cell: Register | None) -> Fn:
    """The iteration itself, over what ``sf`` selects."""
    mf = _fn(mapper)
    # the interpreter loops over `length` for some/all/none: strings iterate their
    # characters, other values nothing; compiled code calls the array method (throws)
    items = _items if interp else _selection
    if name == "map":
        return lambda d: [mf(x) for x in _selection(sf(d))]
    if name == "filter":
        if interp and mapper.__class__ is Const:
            keep = truthy(mapper.value)  # type: ignore[union-attr]
            return lambda d: sf(d) if keep else []
        return lambda d: [x for x in _selection(sf(d)) if truthy(mf(x))]
    if name == "some":
        return lambda d: any(truthy(mf(x)) for x in items(sf(d)))
    if name == "none":
        return lambda d: not any(truthy(mf(x)) for x in items(sf(d)))
    if name == "all":
        return _all(sf, mf, items, interp, cell)
    return _reduce(sf, mf, None if init is None else _fn(init))


def _all(sf: Fn, mf: Fn, items: Any, interp: bool, cell: Register | None) -> Fn:
    def run(d: Any) -> Any:
        v = sf(d)
        if cell is not None:
            cell.value = v
        if interp and js_falsy(v):  # `v || []` is checked for emptiness there
            return False
        if v.__class__ is list and not v:
            return False
        return all(truthy(mf(x)) for x in items(v))

    return run


def _reduce(sf: Fn, mf: Fn, initf: Fn | None) -> Fn:
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

    return run


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


BUILDERS: dict[str, Builder] = {
    "in": build_in,
    "merge": function_op("merge", _merge),
    "map": _iterator("map"),
    "filter": _iterator("filter"),
    "reduce": _iterator("reduce"),
    "all": _iterator("all"),
    "some": _iterator("some"),
    "none": _iterator("none"),
}
