"""flagd flag-definition documents -> compiled, validated :class:`FlagSet` snapshots.

One pass both validates and compiles: every problem is collected with its JSON path
(``flags.new-checkout.targeting.if[0].fractional[2]: weight must be an integer``). Strict
(``validate``, ``push``): only a document without problems becomes a FlagSet. Tolerant
(sources serving what they hold anyway, like flagd): every valid flag is served, an invalid
one as the error flagd gives for it at evaluation time, and a flag with warnings only
(checks flagd's evaluators make at run time, answering null) as flagd evaluates it. ``$ref`` is resolved against ``$evaluators``
recursively while compiling (unknown names and cycles are problems). One flag is compiled
by ``proxy.evaluation.flags``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from proxy.evaluation.flags import (
    build_flag,
    compile_flag,
    compile_flag_tolerantly,
    dedupe,
    metadata_of,
)
from proxy.evaluation.jsonlogic.compiler import LogicCompiler
from proxy.evaluation.jsonlogic.jsvalue import JSThrow
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    JSON,
    Flag,
    FlagSet,
    FractionalHash,
    InvalidDocument,
    Problem,
    canonical,
)

log = logging.getLogger("flagedge.evaluation")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

__all__ = [
    "apply_after",
    "compile_document",
    "compile_flag_served",
    "compile_flag_strictly",
    "declared_fractional_hash",
    "flag_set",
    "load_document",
    "validate_document",
    "validate_evaluators",
]


def load_document(data: bytes | str) -> JSON:
    """Parse a flag document's JSON; raises InvalidDocument on bad JSON."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidDocument([Problem("", f"document is larger than {MAX_DOCUMENT_BYTES} bytes")])
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidDocument([Problem("", f"invalid JSON: {exc}")]) from None


def _ref_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the evaluator reference graph, each reported once (iterative DFS)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif nxt not in graph:
                continue
            elif state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return cycles


def validate_evaluators(evaluators: Any) -> list[Problem]:
    """Problems in ``$evaluators``: each body on its own (refs are checked, not expanded, so
    this stays linear in the size of the evaluators), plus reference cycles."""
    if evaluators is None:
        return []
    if evaluators.__class__ is not dict:
        return [Problem("$evaluators", "$evaluators must be an object")]
    problems: list[Problem] = []
    graph: dict[str, set[str]] = {}
    for name, body in evaluators.items():
        if not name:
            problems.append(Problem("$evaluators", "evaluator names must not be empty"))
            continue
        cc = LogicCompiler(evaluators, expand_refs=False)
        try:
            cc.compile(body, f"$evaluators.{name}")
        except RecursionError:  # far past MAX_DEPTH: still name the evaluator
            cc.problem(f"$evaluators.{name}", "rule is nested too deeply")
        except JSThrow as exc:  # a constant too large to handle (string/iteration limits)
            cc.problem(f"$evaluators.{name}", f"constant expression fails: {exc}")
        problems.extend(cc.problems)
        graph[name] = cc.refs
    for cycle in _ref_cycles(graph):
        problems.append(Problem(f"$evaluators.{cycle[0]}", f"cyclic $ref: {' -> '.join(cycle)}"))
    return dedupe(problems)


def _compile(doc: Any, rejected: dict[str, tuple[Problem, ...]] | None = None,
             fractional_hash: FractionalHash | None = None,
             ) -> tuple[list[Problem], dict[str, Flag], dict[str, Any], dict[str, Any], FractionalHash]:
    """Every problem, the flags, evaluators, set metadata and hashing generation of ``doc``
    (``fractional_hash``, else the one the document declares). With ``rejected`` (tolerant)
    an invalid flag is served as its error and recorded there by key ("" for set-level
    problems); otherwise it is left out."""
    problems: list[Problem] = []
    flags: dict[str, Flag] = {}
    if doc.__class__ is not dict:
        return ([Problem("", "a flag document must be a JSON object with a 'flags' object")],
                flags, {}, {}, fractional_hash or DEFAULT_FRACTIONAL_HASH)
    if fractional_hash is None:
        fractional_hash = declared_fractional_hash(doc, problems)
    raw_flags = doc.get("flags")
    if raw_flags.__class__ is not dict:
        problems.append(Problem("flags", "'flags' is required and must be an object"))
        raw_flags = {}
    evaluators = doc.get("$evaluators")
    problems.extend(validate_evaluators(evaluators))
    if evaluators.__class__ is not dict:
        evaluators = {}
    set_md = metadata_of(doc.get("metadata"), "metadata", problems)
    if rejected is not None and any(p.path.split(".")[0] == "metadata" for p in problems):
        set_md = {}  # served without the set's metadata (reported)
    if rejected is not None and any(not p.warning for p in problems):
        rejected[""] = tuple(p for p in problems if not p.warning)
    for key, raw in raw_flags.items():
        if rejected is None or key.__class__ is not str or not key:
            flag = build_flag(key, raw, evaluators, set_md, problems, fractional_hash)
        else:
            flag, found = compile_flag_tolerantly(key, raw, evaluators, set_md, fractional_hash)
            problems.extend(found)
            if flag.problems and any(not p.warning for p in found):
                rejected[key] = tuple(p for p in found if not p.warning)
        if flag is not None:
            flags[key] = flag
    if rejected is not None and "" not in rejected and any(
            p.path == "flags" and not p.warning for p in problems):
        rejected[""] = tuple(p for p in problems if p.path == "flags")
    return dedupe(problems), flags, evaluators, set_md, fractional_hash


#: A document's own hashing generation (files, ``--bootstrap``, exports): a top-level key,
#: like ``$schema`` and ``$evaluators`` outside ``flags``. flagd ignores it; flagedge never
#: sends it to flagd or to providers (the rules stream carries the generation beside the
#: document).
FRACTIONAL_HASH_KEY = "$fractionalHash"


def declared_fractional_hash(doc: Mapping[str, Any], problems: list[Problem] | None = None
                             ) -> FractionalHash:
    """The generation ``doc`` declares (``"$fractionalHash": "v3"``), v2 when it declares
    none; an unknown value is a problem (the set-level kind: served as v2 meanwhile)."""
    raw = doc.get(FRACTIONAL_HASH_KEY)
    if raw is None:
        return DEFAULT_FRACTIONAL_HASH
    try:
        return FractionalHash.parse(raw)
    except ValueError as exc:
        if problems is not None:
            problems.append(Problem(FRACTIONAL_HASH_KEY, str(exc)))
        return DEFAULT_FRACTIONAL_HASH


def validate_document(doc: Any) -> list[Problem]:
    """Every problem in a flag document (empty when valid). Never raises."""
    try:
        if isinstance(doc, (bytes, str)):
            doc = load_document(doc)
        return _compile(doc)[0]
    except InvalidDocument as exc:
        return exc.problems
    except RecursionError:
        return [Problem("", "document is nested too deeply")]
    except Exception as exc:  # a bug here must not take a source down
        log.exception("validation failed")
        return [Problem("", f"internal error while validating: {exc!r}")]


def compile_document(doc: Any, *, version: int = 0, epoch: str = "", updated_at: float = 0.0,
                     tolerant: bool = False, fractional_hash: FractionalHash | None = None
                     ) -> FlagSet:
    """Compile a whole document into a FlagSet; raises InvalidDocument with every problem.

    ``tolerant`` (sources serving a file they hold anyway): only a document that is no flag
    document at all raises; an invalid flag is served as its evaluation-time error and every
    problem is in the set's ``rejected`` (warnings are not: those flags are served)."""
    if isinstance(doc, (bytes, str)):
        doc = load_document(doc)
    rejected: dict[str, tuple[Problem, ...]] | None = {} if tolerant else None
    try:
        problems, flags, evaluators, set_md, generation = _compile(doc, rejected, fractional_hash)
    except RecursionError:
        raise InvalidDocument([Problem("", "document is nested too deeply")]) from None
    if not problems:
        return flag_set(flags, evaluators, set_md, version=version, epoch=epoch,
                        updated_at=updated_at, fractional_hash=generation)
    if not tolerant or doc.__class__ is not dict or doc.get("flags").__class__ is not dict:
        raise InvalidDocument(problems)  # tolerant: no flag document at all
    return flag_set(flags, evaluators, set_md, version=version, epoch=epoch,
                    updated_at=updated_at, rejected=rejected, fractional_hash=generation)


# -- applying one change ---------------------------------------------------------------------
#: Compile one flag of a change: (key, raw flag, evaluators, set metadata, the compiled flag it
#: replaces or None, the hashing generation) -> the flag to serve (None: none). The Redis
#: source keeps the replaced flag when the new one is invalid; the provider raises.
FlagCompiler = Callable[[str, Any, Mapping[str, Any], Mapping[str, Any], Flag | None,
                         FractionalHash], Flag | None]


def compile_flag_strictly(key: str, raw: Any, evaluators: Mapping[str, Any],
                          metadata: Mapping[str, Any], _replaced: Flag | None,
                          fractional_hash: FractionalHash) -> Flag:
    """A :data:`FlagCompiler` that raises InvalidDocument on a bad flag."""
    return compile_flag(key, raw, evaluators, metadata, fractional_hash)


def compile_flag_served(key: str, raw: Any, evaluators: Mapping[str, Any],
                        metadata: Mapping[str, Any], _replaced: Flag | None,
                        fractional_hash: FractionalHash) -> Flag:
    """A :data:`FlagCompiler` that serves a bad flag as its evaluation-time error."""
    return compile_flag_tolerantly(key, raw, evaluators, metadata, fractional_hash)[0]


def flag_set(flags: Mapping[str, Flag], evaluators: Mapping[str, Any],
             metadata: Mapping[str, Any], *, version: int, epoch: str,
             updated_at: float, rejected: Mapping[str, tuple[Problem, ...]] | None = None,
             fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH,
             like: FlagSet | None = None, revision: str = "") -> FlagSet:
    """A FlagSet of flags compiled for ``fractional_hash``, with what is derived of them.
    ``like``: a flag set whose derived parts are known to be these flags' too (see
    :func:`_same_derived`), copied rather than computed over every flag again."""
    if like is not None:
        uses_timestamp, boundaries = like.uses_timestamp, like.boundaries
        reads, experiments = like.reads, like.experiments
    else:
        uses_timestamp = any(f.uses_timestamp for f in flags.values())
        boundaries, reads = boundaries_of(flags.values()), reads_of(flags.values())
        experiments = tuple(k for k, f in flags.items() if f.experiment)
    return FlagSet(flags=flags, evaluators=evaluators, metadata=metadata, version=version,
                   epoch=epoch, updated_at=updated_at, uses_timestamp=uses_timestamp,
                   boundaries=boundaries, reads=reads, rejected=rejected or {},
                   fractional_hash=fractional_hash, experiments=experiments, revision=revision)


def _derived_part(flag: Flag) -> tuple[Any, ...]:
    """What one flag adds to its set's derived parts (timestamp use, boundaries, reads,
    experiments)."""
    dynamic = flag.static_result is None
    return (flag.uses_timestamp, dynamic and flag.boundaries, dynamic and flag.reads,
            bool(flag.experiment))


def _same_derived(before: Mapping[str, Flag], after: Mapping[str, Flag],
                  replaced: Iterable[str]) -> bool:
    """``after`` is ``before`` with the flags named in ``replaced`` swapped for others that
    add the same to the derived parts (the same keys, in the same order): the usual
    change, a default variant or a percentage. Computing them again cost O(flags) per
    change: ~10 us at 50 flags in a hot loop, ~55 us in a busy server (bench/soak.py)."""
    return len(before) == len(after) and all(
        key in before and _derived_part(before[key]) == _derived_part(after[key])
        for key in replaced)


def boundaries_of(flags: Iterable[Flag]) -> tuple[int, ...] | None:
    """When any of ``flags``' results may change with no write (sorted), or None when some
    flag's may change at any time (a read of the clock other than a literal comparison).
    Flags with a precomputed result (static, disabled, served as an error) never run."""
    times: set[int] = set()
    for flag in flags:
        if flag.static_result is not None:
            continue
        if flag.boundaries is None:
            return None
        times.update(flag.boundaries)
    return tuple(sorted(times))


def reads_of(flags: Iterable[Flag]) -> frozenset[str] | None:
    """What a set of flags reads of a context: the union of theirs and targetingKey, or None
    when any one's is unknown."""
    names = {"targetingKey"}
    for flag in flags:
        if flag.static_result is not None:
            continue
        if flag.reads is None:
            return None
        names |= flag.reads
    return frozenset(names)


@dataclasses.dataclass(frozen=True, slots=True)
class AppliedChange:
    flag_set: FlagSet
    upserted: frozenset[str]  # flags whose compiled form changed (named or dependent)
    deleted: frozenset[str]
    evaluators_changed: frozenset[str]  # names of evaluators added, removed or changed
    metadata_changed: bool


def apply_after(current: FlagSet, flags: Mapping[str, Any], evaluators: Mapping[str, Any],
                metadata: Mapping[str, Any], *, version: int, epoch: str, updated_at: float,
                compile_one: FlagCompiler = compile_flag_strictly,
                fractional_hash: FractionalHash | None = None) -> AppliedChange:
    """``current`` with one change's ``after`` side applied: ``flags`` maps each flag the
    change names to its new definition (None: deleted); ``evaluators`` and ``metadata`` are
    the complete maps after it; ``fractional_hash`` the hashing generation after it (None:
    unchanged). Only what can differ is compiled again: the flags it names, those whose
    referenced ``$evaluators`` or the set metadata (merged into every flag) moved, and on a
    new generation those using ``fractional``. Compared in canonical JSON, so ``1`` and
    ``1.0`` count as a change."""
    generation = current.fractional_hash if fractional_hash is None else fractional_hash
    rehash = generation is not current.fractional_hash
    # (the maps a change did not name are the current ones: nothing to compare)
    moved = frozenset() if evaluators is current.evaluators else frozenset(
        k for k in {*current.evaluators, *evaluators}
        if canonical(current.evaluators.get(k)) != canonical(evaluators.get(k)))
    metadata_moved = metadata is not current.metadata and (
        canonical(dict(metadata)) != canonical(dict(current.metadata)))
    served = dict(current.flags)
    touched = dict(flags)
    deleted = frozenset(k for k, v in touched.items() if v is None and k in served)
    for key in deleted:
        del served[key]
    if metadata_moved or moved or rehash:
        for key, flag in current.flags.items():
            if key not in touched and (metadata_moved or flag.refs & moved
                                       or (rehash and flag.fractional)):
                touched[key] = dict(flag.raw)
    upserted: set[str] = set()
    for key, raw in touched.items():
        if raw is None:
            continue
        old = current.flags.get(key)
        flag = compile_one(key, raw, evaluators, metadata, old, generation)
        if flag is not None and flag is not old:
            served[key] = flag
            upserted.add(key)
    like = current if not deleted and _same_derived(current.flags, served, upserted) else None
    return AppliedChange(
        flag_set(served, evaluators, metadata, version=version, epoch=epoch,
                 updated_at=updated_at, fractional_hash=generation, like=like),
        frozenset(upserted), deleted, moved, metadata_moved)
