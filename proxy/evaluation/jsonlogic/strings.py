"""flagd's ``starts_with`` / ``ends_with``: ``[string, affix]``; non-strings give null."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.evaluation.jsonlogic.base import function_op
from proxy.evaluation.jsonlogic.jsvalue import Const

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.compiler import Compiled, LogicCompiler


def _make(name: str, starts: bool) -> Any:
    def impl(vals: list[Any]) -> bool | None:
        if len(vals) != 2:
            return None
        s, affix = vals
        if s.__class__ is not str or affix.__class__ is not str:
            return None
        return s.startswith(affix) if starts else s.endswith(affix)

    generic = function_op(name, impl, 2, 2)

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
        return generic(cc, args, path)

    return build


build_starts_with = _make("starts_with", True)
build_ends_with = _make("ends_with", False)
