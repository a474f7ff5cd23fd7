"""What the compiler and every operator module share: the compiled-node types and the
helpers builders use to turn compiled arguments into closures.

``compiler.py`` walks the tree and looks each operator up in ``table.py``; the operator
modules build closures with these helpers. The compiler type itself is needed here only for
annotations (``TYPE_CHECKING``), so this module imports nothing but ``jsvalue``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.jsvalue import Const

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler

# A compiled node: a closure over the request data, or a Const (a subtree folded at load).
Fn = Callable[[Any], Any]
Compiled = Fn | Const
# A builder compiles one operation: (compiler, raw arguments, path of the operation).
Builder = Callable[["LogicCompiler", Any, str], Compiled]


class Register(threading.local):
    """json-logic-engine's `prev` variable, which its compiled comparisons read after an
    operand's code assigned it. The reference has one per call of the generated function;
    a compiled rule here is shared by every thread that evaluates it, so each thread has its
    own (an evaluation runs on one thread, start to end, and never re-enters itself).

    Closures read and write ``cell.value``.
    """

    value: Any = None  # a thread's first read, before it ever assigned


def fn(c: Any) -> Any:
    """A compiled node as a callable (constants become ``lambda d: value``)."""
    if c.__class__ is Const:
        v = c.value
        return lambda d: v
    return c


def is_const(c: Any) -> bool:
    return c.__class__ is Const


def all_const(parts: list[Any]) -> bool:
    return all(p.__class__ is Const for p in parts)


def single_operand(args: Any) -> bool:
    """The reference's interpreter treats ``{"op": x}`` and ``{"op": [x]}`` (x not a list) as
    one operand whose own value the operator looks into."""
    return args.__class__ is not list or (len(args) == 1 and args[0].__class__ is not list)


def apply_to_operand(cc: Any, args: Any, path: str, method: Any) -> Any:
    """``method`` applied to the single operand's value; folded at load when it is constant."""
    node = args[0] if args.__class__ is list else args
    inner = cc.compile(node, f"{path}[0]" if args.__class__ is list else path)
    if inner.__class__ is Const:
        return cc.fold(path, lambda: method(inner.value))
    f = fn(inner)
    return lambda d: method(f(d))


def coerce_array(v: Any) -> list[Any]:
    return v if v.__class__ is list else [v]


def function_op(name: str, impl: Any, lo: int = 0, hi: int | None = None) -> Any:
    """An operator whose arguments are all evaluated first (eager), then passed as a list."""

    def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
        if args.__class__ is dict and args:
            inner = cc.compile(args, path)
            if inner.__class__ is Const:
                return cc.fold(path, lambda: impl(coerce_array(inner.value)))  # type: ignore[union-attr]
            f = fn(inner)
            return lambda d: impl(coerce_array(f(d)))
        if args.__class__ is not list:
            args = [args]
        parts = cc.args(args, path, name, lo, hi)
        if parts is None:
            return Const(None)
        if all_const(parts):
            return cc.fold(path, lambda: impl([p.value for p in parts]))
        fns = [fn(p) for p in parts]
        if len(fns) == 1:
            (f0,) = fns
            return lambda d: impl([f0(d)])
        if len(fns) == 2:
            f0, f1 = fns
            return lambda d: impl([f0(d), f1(d)])
        return lambda d: impl([f(d) for f in fns])

    return build
