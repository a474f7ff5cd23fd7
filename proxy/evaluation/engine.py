"""Evaluate compiled flags for a request context: the hot path.

``evaluate`` / ``evaluate_all`` never raise: a bad context is an INVALID_CONTEXT result, an
unknown key FLAG_NOT_FOUND, a rule that fails at run time a GENERAL error. Static and
disabled flags return their precomputed result; targeted flags run their closure on the
context plus ``$flagd`` (built once per request, and only for rules that read it) and map
the outcome to one of the results precomputed at compile time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.evaluation.flags import general_error, resolve
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.compiler import LogicCompiler, describe
from proxy.evaluation.plan import Plan, plan_of, resolve_safely, unprecomputed
from proxy.model import ErrorCode, EvaluationResult, FlagSet, FlagState, error_result

__all__ = ["evaluate", "evaluate_all", "evaluate_dynamic", "explain"]


def _context_problem(context: Any) -> str | None:
    if context.__class__ is not dict and not isinstance(context, Mapping):
        return "context must be a JSON object"
    tk = context.get("targetingKey")
    if tk is not None and tk.__class__ is not str:
        return "targetingKey must be a string"
    return None


def evaluate(flag_set: FlagSet, key: str, context: Mapping[str, Any] | None) -> EvaluationResult:
    """Evaluate one flag. Never raises."""
    flag = flag_set.flags.get(key)
    if flag is None:
        return error_result(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found")
    if context.__class__ is dict:
        tk = context.get("targetingKey")  # type: ignore[union-attr]
        if tk is not None and tk.__class__ is not str:
            return error_result(key, ErrorCode.INVALID_CONTEXT, "targetingKey must be a string")
    elif context is None:
        context = {}
    else:
        bad = _context_problem(context)
        if bad is not None:
            return error_result(key, ErrorCode.INVALID_CONTEXT, bad)
    static = flag.static_result
    if static is not None:
        return static
    if flag.state is FlagState.DISABLED or flag.rule is None:
        return unprecomputed(flag)
    # the rule, inline: this is the hot path
    if flag.reads_flagd:
        data = dict(context)  # type: ignore[arg-type]
        data["$flagd"] = {"flagKey": key, "timestamp": int(time.time())}
    else:
        data = context  # type: ignore[assignment]
    try:
        res = flag.rule(data)  # type: ignore[misc]
    except Exception as exc:  # bad operator arguments at run time: GENERAL, never a 500
        return general_error(flag, f"targeting failed: {describe(exc)}")
    if res.__class__ is str:
        r = flag.match_results.get(res)
        if r is not None:
            return r
    elif res is None and flag.default_result is not None:
        return flag.default_result
    return resolve_safely(flag, res)


def evaluate_all(flag_set: FlagSet, context: Mapping[str, Any] | None) -> list[EvaluationResult]:
    """Evaluate every flag of the set (document order). Never raises. Static flags give their
    precomputed results; targeted flags go through the set's plan (grouped by what they read,
    memoised on those values: proxy.evaluation.plan)."""
    plan, dynamic = evaluate_dynamic(flag_set, context)
    return dynamic if plan is None else plan.in_document_order(dynamic)


def evaluate_dynamic(flag_set: FlagSet, context: Mapping[str, Any] | None
                     ) -> tuple[Plan | None, list[EvaluationResult]]:
    """(the set's plan, its dynamic flags' results in plan order), or (None, every flag's
    INVALID_CONTEXT error in document order). Never raises."""
    if context is None:
        context = {}
    bad = _context_problem(context)
    if bad is not None:
        return None, [error_result(k, ErrorCode.INVALID_CONTEXT, bad) for k in flag_set.flags]
    plan = plan_of(flag_set)
    return plan, plan.evaluate(context)


def _show(v: Any) -> str:
    try:
        return orjson.dumps(v).decode()[:200]
    except TypeError:
        return repr(v)[:200]


def explain(flag_set: FlagSet, key: str, context: Mapping[str, Any] | None) -> tuple[EvaluationResult, list[str]]:
    """The evaluation plus the rule path taken, as human-readable lines (slow path: the
    flag's targeting is recompiled with tracing)."""
    flag = flag_set.flags.get(key)
    if flag is None:
        return error_result(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found"), ["flag not found"]
    context = {} if context is None else context
    bad = _context_problem(context)
    if bad is not None:
        return error_result(key, ErrorCode.INVALID_CONTEXT, bad), [f"invalid context: {bad}"]
    if flag.problems:  # an invalid definition a source holds: served as its error
        res = evaluate(flag_set, key, context)
        return res, [f"invalid flag definition -> error {res.error_code}: {p}" for p in flag.problems
                     if not p.warning] or [f"error {res.error_code}"]
    if flag.state is FlagState.DISABLED:
        return evaluate(flag_set, key, context), ["state DISABLED -> no value (the client uses its default)"]
    targeting = flag.raw.get("targeting")
    if flag.rule is None or not targeting:
        res = evaluate(flag_set, key, context)
        return res, [f"no targeting -> defaultVariant {_show(flag.default_variant)} ({res.reason.value})"]
    lines: list[str] = []
    cc = LogicCompiler(flag_set.evaluators, trace=lines, flag_key=key,
                       fractional_hash=flag_set.fractional_hash)
    compiled = cc.compile(targeting, "")
    if any(not p.warning for p in cc.problems):  # evaluators changed under us: plain evaluation
        return evaluate(flag_set, key, context), ["(rule could not be traced)"]
    data = dict(context)
    data["$flagd"] = {"flagKey": key, "timestamp": int(time.time())}
    try:
        out = as_fn(compiled)(data)
    except Exception as exc:
        lines.append(f"error: {describe(exc)}")
        return general_error(flag, f"targeting failed: {describe(exc)}"), lines
    result = resolve(flag, out)
    if result.error_code is not None:
        lines.append(f"targeting returned {_show(out)} -> error {result.error_details}")
    elif out is None:
        lines.append(f"targeting returned null -> defaultVariant {_show(result.variant)} (DEFAULT)")
    else:
        lines.append(f"targeting returned {_show(out)} -> variant {_show(result.variant)} (TARGETING_MATCH)")
    return result, lines
