"""One flagd flag definition -> a compiled :class:`Flag`: its variants, metadata and
targeting validated (every problem with its JSON path) and compiled, and the results it can
produce precomputed, so evaluating allocates nothing but the rule's own values. Strict
(``compile_flag``) or as a source serves it (``compile_flag_tolerantly``: an invalid flag
answers the error flagd gives for it at evaluation time). Whole documents:
``proxy.evaluation.documents``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from proxy.evaluation.jsonlogic.base import Compiled
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.compiler import LogicCompiler
from proxy.evaluation.jsonlogic.jsvalue import Const, JSThrow, to_string
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    Assigned,
    ErrorCode,
    EvaluationResult,
    Flag,
    FlagState,
    FractionalHash,
    InvalidDocument,
    Problem,
    Reason,
    VariantType,
    canonical,
)

log = logging.getLogger("flagedge.evaluation")

# Object variants are served as JSON: orjson refuses to write more than 255 levels, so a
# deeper value would fail every response that carries it (checked at load instead).
MAX_VALUE_DEPTH = 64


def _kind(value: Any) -> VariantType | None:
    c = value.__class__
    if c is bool:
        return VariantType.BOOLEAN
    if c is str:
        return VariantType.STRING
    if c is int or c is float:
        return VariantType.NUMBER
    if c is dict:
        return VariantType.OBJECT
    return None


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if v.__class__ is dict else v
        stack.extend((c, depth + 1) for c in children if c.__class__ in (dict, list))
    return False


def metadata_of(raw: Any, path: str, problems: list[Problem]) -> dict[str, Any]:
    if raw is None:
        return {}
    if raw.__class__ is not dict:
        problems.append(Problem(path, "metadata must be an object"))
        return {}
    for k, v in raw.items():
        if v.__class__ not in (str, int, float, bool):
            problems.append(Problem(f"{path}.{k}", "metadata values must be string, number or boolean"))
    return raw


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def resolve(flag: Flag, res: Any) -> EvaluationResult:
    """Map a targeting result to the flag's outcome (null -> DEFAULT, name -> variant)."""
    if res is None:
        if flag.default_result is not None:
            return flag.default_result
        return _default_result(flag.key, flag.variants, flag.default_variant, flag.metadata)
    if res.__class__ is Assigned:  # an experiment's split assignment (DESIGN §11)
        r = flag.assigned_results.get(res)
        if r is not None:
            return r
        # Marked, but the flag is no experiment after all (its rule reads the clock: a
        # rollout over an experiment's split): the plain variant name.
        res = str(res)
    name = res if res.__class__ is str else to_string(res)
    r = flag.match_results.get(name)
    if r is not None:
        return r
    if name in flag.variants:  # a Flag built without precomputed results
        return EvaluationResult(flag.key, Reason.TARGETING_MATCH, name, flag.variants[name], flag.metadata)
    return general_error(flag, f"targeting returned {name[:100]!r}, which is not a variant of this flag")


def general_error(flag: Flag, details: str) -> EvaluationResult:
    return EvaluationResult(
        key=flag.key, reason=Reason.ERROR, metadata=flag.metadata,
        error_code=ErrorCode.GENERAL, error_details=details,
    )


def _default_result(key: str, variants: Mapping[str, Any], default: str | None, md: Mapping[str, Any]) -> EvaluationResult:
    if default is None:
        return EvaluationResult(key, Reason.DEFAULT, None, None, md)
    return EvaluationResult(key, Reason.DEFAULT, default, variants[default], md)


def build_flag(
    key: Any, raw: Any, evaluators: Mapping[str, Any], set_metadata: Mapping[str, Any], problems: list[Problem],
    fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH,
) -> Flag | None:
    path = f"flags.{key}"
    before = len(problems)
    if key.__class__ is not str or not key:
        problems.append(Problem("flags", "flag keys must be non-empty strings"))
        return None
    if raw.__class__ is not dict:
        problems.append(Problem(path, "a flag must be a JSON object"))
        return None
    state = raw.get("state")
    if state not in ("ENABLED", "DISABLED"):
        msg = "state is required (ENABLED or DISABLED)" if state is None else f"unknown state {state!r} (use ENABLED or DISABLED)"
        problems.append(Problem(f"{path}.state", msg))
    variants, kinds = _variants(raw.get("variants"), path, problems)
    default = raw.get("defaultVariant")
    if default is not None and (default.__class__ is not str or default not in variants):
        names = ", ".join(list(variants)[:8])
        problems.append(Problem(f"{path}.defaultVariant", f"{default!r} is not one of the variants ({names})"))
    flag_md = metadata_of(raw.get("metadata"), f"{path}.metadata", problems)
    cc = LogicCompiler(evaluators, flag_key=key, fractional_hash=fractional_hash,
                       mark_assigned=is_experiment(flag_md))
    compiled = _targeting(cc, raw.get("targeting"), path, problems)
    if any(not p.warning for p in problems[before:]):
        return None

    md = {**set_metadata, **flag_md}
    matched = {n: EvaluationResult(key, Reason.TARGETING_MATCH, n, v, md)
               for n, v in variants.items()}
    revision = experiment_revision(raw, cc, evaluators) if cc.mark_assigned else None
    flag = Flag(
        key=key,
        state=FlagState(state),
        variants=variants,
        variant_type=next(iter(kinds)),
        default_variant=default,
        metadata=md,
        raw=raw,
        rule=None if compiled is None else as_fn(compiled),
        uses_timestamp=cc.uses_timestamp,
        boundaries=cc.boundaries,
        refs=frozenset(cc.refs),
        match_results=matched,
        default_result=_default_result(key, variants, default, md),
        reads_flagd=cc.needs_flagd,
        reads=None if cc.reads_unknown else frozenset(cc.reads),
        fractional=cc.uses_fractional,
        experiment=revision,
        assigned_results={} if revision is None else {
            n: dataclasses.replace(r, assigned=True) for n, r in matched.items()},
    )
    return _with_static_result(flag, compiled, path, problems)


def is_experiment(flag_metadata: Mapping[str, Any]) -> bool:
    """DESIGN §11: metadata ``kind: "experiment"`` or an ``experimentId``."""
    return flag_metadata.get("kind") == "experiment" or "experimentId" in flag_metadata


def experiment_revision(raw: Mapping[str, Any], cc: LogicCompiler,
                        evaluators: Mapping[str, Any]) -> str | None:
    """The revision an experiment's assignments are recorded under: a hash of everything that
    decides them (state, variants, default, targeting, the ``$evaluators`` it uses, the
    hashing generation); None when the rule has no split or reads ``$flagd.timestamp``
    (time-stepped: not an experiment, DESIGN §11)."""
    if not cc.uses_fractional or cc.uses_timestamp:
        return None
    decided = [raw.get("state"), raw.get("variants"), raw.get("defaultVariant"),
               raw.get("targeting"), {name: evaluators.get(name) for name in sorted(cc.refs)},
               cc.fractional_hash.value]
    return hashlib.blake2b(canonical(decided), digest_size=6).hexdigest()


def _variants(variants: Any, path: str, problems: list[Problem]) -> tuple[dict[str, Any], dict[VariantType, list[str]]]:
    """The flag's variants (empty when unusable) and their names by type (one type if valid)."""
    kinds: dict[VariantType, list[str]] = {}
    if variants.__class__ is not dict or not variants:
        problems.append(Problem(f"{path}.variants", "variants must be a non-empty object of name -> value"))
        variants = {}
    for name, value in variants.items():
        kind = _kind(value)
        if not name:
            problems.append(Problem(f"{path}.variants", "variant names must not be empty"))
        if kind is None:
            problems.append(Problem(f"{path}.variants.{name}", "variant values must be boolean, string, number or object"))
        elif kind is VariantType.OBJECT and _too_deep(value, MAX_VALUE_DEPTH):
            problems.append(Problem(f"{path}.variants.{name}", f"variant value nests deeper than {MAX_VALUE_DEPTH} levels"))
        else:
            kinds.setdefault(kind, []).append(name)
    if len(kinds) > 1:
        detail = ", ".join(f"{k.value}: {', '.join(v[:3])}" for k, v in kinds.items())
        problems.append(Problem(f"{path}.variants", f"variants must all have one type, found {detail}"))
    return variants, kinds


def _targeting(cc: LogicCompiler, targeting: Any, path: str, problems: list[Problem]) -> Compiled | None:
    """The flag's compiled targeting (None: none, or it has problems)."""
    if targeting is None or targeting == {}:
        return None
    if targeting.__class__ is not dict:
        problems.append(Problem(f"{path}.targeting", "targeting must be a JsonLogic object"))
        return None
    compiled = None
    try:
        compiled = cc.compile(targeting, f"{path}.targeting")
    except RecursionError:  # far past MAX_DEPTH: still name the flag
        cc.problem(f"{path}.targeting", "rule is nested too deeply")
    except JSThrow as exc:  # a constant too large to handle (string/iteration limits)
        cc.problem(f"{path}.targeting", f"constant expression fails: {exc}")
    problems.extend(cc.problems)
    return compiled


def _with_static_result(flag: Flag, compiled: Compiled | None, path: str, problems: list[Problem]) -> Flag | None:
    """``flag`` with its result precomputed when it cannot depend on the context (disabled,
    no targeting, or targeting folded to a constant); None when that constant is no variant."""
    key, md, default = flag.key, flag.metadata, flag.default_variant
    static = None
    if flag.state is FlagState.DISABLED:
        static = EvaluationResult(key, Reason.DISABLED, None, None, md)
    elif compiled is None:
        static = EvaluationResult(key, Reason.STATIC, default, flag.variants[default], md) if default is not None else flag.default_result
    elif compiled.__class__ is Const:
        try:
            static = resolve(flag, compiled.value)
            shown = to_string(compiled.value)[:100] if static.error_code is not None else ""
        except JSThrow as exc:  # a constant too large to name a variant
            problems.append(Problem(f"{path}.targeting", f"targeting always fails: {exc}",
                                    ErrorCode.GENERAL))
            return None
        if static.error_code is not None:
            problems.append(Problem(f"{path}.targeting", f"targeting always returns {shown!r}, which is not a variant",
                                    ErrorCode.GENERAL))
            return None
    if static is not None:
        # Set on the Flag just built, which nobody else holds yet: ``dataclasses.replace``
        # built every static flag twice (its compile took 18.4 us with it, 13.2 without,
        # paid on every change to it).
        object.__setattr__(flag, "static_result", static)
    return flag


def keep_results(flag: Flag, previous: Flag | None) -> Flag:
    """``flag``, just built to replace ``previous``, holding the result objects of
    ``previous`` and of its earlier versions where they are the same results: same key,
    variants and metadata (compared in their stored form: ``1``, ``1.0`` and ``true``
    differ), the same outcome (reason and variant). An edit to a rule or a default leaves
    the other results the very objects the bulk bodies already serialised, and a flag
    switched back (a kill switch toggled off and on, a default rolled back) gets its earlier
    default or static result again (``proxy.api.bulk_body`` finds items by object first: one
    dict lookup instead of building a key of the result's content). Set on the new flag,
    which nobody else holds yet."""
    if (previous is None or previous.key != flag.key or previous.problems
            or canonical(previous.variants) != canonical(flag.variants)
            or canonical(previous.metadata) != canonical(flag.metadata)):
        return flag
    earlier = dict(previous.earlier)  # (bounded: a few reasons per variant, and DISABLED)
    for result in (previous.default_result, previous.static_result):
        if result is not None and result.error_code is None:
            earlier[(result.reason, result.variant)] = result
    kept: dict[str, Any] = {"match_results": previous.match_results, "earlier": earlier}
    for name in ("default_result", "static_result"):
        new = getattr(flag, name)
        if new is not None and new.error_code is None:
            kept[name] = earlier.get((new.reason, new.variant), new)
    if previous.assigned_results and flag.assigned_results:
        kept["assigned_results"] = previous.assigned_results
    for name, value in kept.items():
        object.__setattr__(flag, name, value)
    return flag


def compile_flag(key: str, raw_flag: Any, evaluators: Mapping[str, Any] | None, set_metadata: Mapping[str, Any] | None,
                 fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH) -> Flag:
    """Compile one flag; raises InvalidDocument (paths ``flags.<key>....``)."""
    problems: list[Problem] = []
    flag = build_flag(key, raw_flag, evaluators or {}, set_metadata or {}, problems,
                       fractional_hash)
    if flag is None or problems:
        raise InvalidDocument(dedupe(problems) or [Problem(f"flags.{key}", "invalid flag")])
    return flag


def compile_flag_tolerantly(key: str, raw: Any, evaluators: Mapping[str, Any] | None,
                            set_metadata: Mapping[str, Any] | None,
                            fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH,
                            ) -> tuple[Flag, list[Problem]]:
    """Compile one flag as a source serves it (strict at write time, tolerant at serve time,
    like flagd): an invalid flag becomes a flag that answers the error flagd gives for it
    at evaluation time; a flag with warnings only is served as flagd evaluates it. Returns
    the flag and every problem found (warnings included)."""
    problems: list[Problem] = []
    flag = build_flag(key, raw, evaluators or {}, set_metadata or {}, problems, fractional_hash)
    problems = dedupe(problems)
    if flag is None:
        flag = error_flag(key, raw, problems or [Problem(f"flags.{key}", "invalid flag")],
                          set_metadata or {})
    return flag, problems


def error_flag(key: str, raw: Any, problems: list[Problem], set_metadata: Mapping[str, Any]) -> Flag:
    """A flag served as the error flagd answers for this invalid definition: GENERAL when its
    rule always names no variant (flagd finds that out when evaluating), else PARSE_ERROR."""
    hard = [p for p in problems if not p.warning] or problems
    code = ErrorCode.GENERAL if all(p.code is ErrorCode.GENERAL for p in hard) else ErrorCode.PARSE_ERROR
    more = f" (and {len(hard) - 1} more)" if len(hard) > 1 else ""
    raw_map = raw if raw.__class__ is dict else {}
    flag_md = raw_map.get("metadata")
    md = {**set_metadata, **(flag_md if flag_md.__class__ is dict else {})}
    variants = raw_map.get("variants")
    variants = variants if variants.__class__ is dict else {}
    kind = next((k for k in map(_kind, variants.values()) if k is not None), VariantType.STRING)
    result = EvaluationResult(key, Reason.ERROR, metadata=md, error_code=code,
                              error_details=f"invalid flag definition: {hard[0]}{more}")
    return Flag(key=key, state=FlagState.ENABLED, variants=variants, variant_type=kind,
                default_variant=None, metadata=md, raw=raw_map, static_result=result,
                problems=tuple(problems), reads=frozenset())
