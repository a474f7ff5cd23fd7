"""Bulk evaluation plans: a flag set's flags grouped by what they read (issue 27).

A targeted flag's result depends only on the top-level context attributes its rule reads
(``Flag.reads``: tests/unit/evaluation/test_reads.py checks it on the conformance generator's
documents). So, once per flag set (:func:`plan_of`, kept on the immutable FlagSet):

- static flags (a precomputed ``static_result``) are never evaluated: their results are fixed;
- targeted flags with known reads are grouped by that set of attributes, and each group
  memoises its flags' results on the values of those attributes (bounded, two generations);
- flags whose reads are unknown (the whole data, a computed ``var``, the clock) and flags built
  without the compiler are evaluated on every request, as before.

A bulk evaluation is then a few dict lookups per group instead of a rule per flag, and the
results are the very objects the compiler precomputed (the bulk-body memo keys on them).

Memo keys are typed. Python's ``1 == 1.0 == True`` (and ``0.0 == -0.0``) hash alike, but a rule
may tell them apart (``cat`` gives "1", "1.0"... and JavaScript division by -0.0 gives
-Infinity), so booleans and floats are wrapped: a float by its exact hex form. A missing
attribute is not null (``missing``, ``var`` defaults). Values other than strings, numbers,
booleans and null (objects, arrays, anything a non-JSON caller passes) make the key unhashable:
that group is evaluated without its memo for that request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from proxy.evaluation.flags import general_error, resolve
from proxy.evaluation.jsonlogic.compiler import describe
from proxy.model import EvaluationResult, Flag, FlagSet, FlagState, Reason

log = logging.getLogger("flagedge.evaluation")

__all__ = ["Plan", "derive_plan", "memo_bytes", "plan_of", "typed", "unprecomputed"]

# Keys per memo generation: a group keeps between one and two generations of keys. With
# 350 flags (bench/ofrep_http.py) the groups number ~20 and a key with its results ~300 B.
MEMO_BOUND = 2048
# ... and by bytes: a plan's memos together hold at most ~2x this (two generations), shared
# out among its groups. Their keys keep context strings alive, so a string longer than
# MAX_KEY_STRING (an adversary's 60 KB appVersion) makes a key unhashable: evaluated, never
# memoised (bench/memory.py's adversarial traffic reached 414 MB of RSS before).
MEMO_BYTES = 8 * 1024 * 1024
MIN_GROUP_BYTES = 64 * 1024
MAX_KEY_STRING = 256
# A memo that rarely hits costs more than it saves (a key, two lookups and an insert per
# request: traffic of never-seen targetingKeys against a group that reads it). Every WINDOW
# misses a group compares: with fewer than one hit per (its flags + 1) misses it evaluates
# without the memo, dropped, for the next SKIP evaluations, then tries again.
WINDOW = 256
SKIP = 16_384
LINEAGE = 8  # ancestors a plan remembers (versions published between two bulk requests)


class _Unhashable:
    """A value a memo key must not hold: any key containing it fails to hash."""

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<unhashable>"


MISSING: Any = type("Missing", (), {"__repr__": lambda _self: "<missing>"})()
_TRUE: Any = type("TrueKey", (), {"__repr__": lambda _self: "<true>"})()
_FALSE: Any = type("FalseKey", (), {"__repr__": lambda _self: "<false>"})()
_FLOAT = "float"  # first item of a float's key: (_FLOAT, value.hex()); no JSON value is a tuple
UNHASHABLE: Any = _Unhashable()


def typed(value: Any) -> Any:
    """The memo-key form of one context value (see the module docstring; long strings are
    not memoised)."""
    c = value.__class__
    if c is str:
        return value if len(value) <= MAX_KEY_STRING else UNHASHABLE
    if c is int or value is None or value is MISSING:
        return value
    if c is bool:
        return _TRUE if value else _FALSE
    if c is float:
        return (_FLOAT, value.hex())
    return UNHASHABLE


def picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``seq -> tuple(seq[i] for i in indices)`` in C (``itemgetter`` returns a bare item for
    one index and refuses none)."""
    if len(indices) > 1:
        return itemgetter(*indices)  # type: ignore[return-value]
    if len(indices) == 1:
        one = indices[0]
        return lambda seq: (seq[one],)
    return lambda _seq: ()


class _Scratch:
    """Per request: the rule data with ``$flagd`` (built once, for rules that read it)."""

    __slots__ = ("data", "ts")

    def __init__(self) -> None:
        self.data: dict[str, Any] | None = None
        self.ts = 0


def unprecomputed(flag: Flag) -> EvaluationResult:
    """A Flag built without the compiler's precomputed results (tests, tools)."""
    if flag.state is FlagState.DISABLED:
        return EvaluationResult(flag.key, Reason.DISABLED, None, None, flag.metadata)
    if flag.rule is None and flag.default_variant is not None:
        return EvaluationResult(flag.key, Reason.STATIC, flag.default_variant,
                                flag.variants[flag.default_variant], flag.metadata)
    return resolve(flag, None)


# One flag as ``run_flags`` takes it: (its rule, its results by variant name's ``get``, its
# DEFAULT result, the flag) — its rule None when it needs the slow path (``$flagd`` in its
# data, or no precomputed results): unpacking a tuple costs less than five attribute loads.
Step = tuple[Any, Any, "EvaluationResult | None", Flag]


def steps_of(flags: Sequence[Flag]) -> tuple[Step, ...]:
    return tuple((None if flag.reads_flagd or flag.rule is None
                  or flag.state is FlagState.DISABLED else flag.rule,
                  flag.match_results.get, flag.default_result, flag) for flag in flags)


def run_flags(steps: Sequence[Step], context: Mapping[str, Any], scratch: _Scratch,
              out: list[EvaluationResult]) -> bool:
    """Append the results of targeted flags (``steps_of``) to ``out``; False when one is an
    error (built per request: never memoised)."""
    clean = True
    append = out.append
    for rule, match, default, flag in steps:
        if rule is None:
            r = _run_slow(flag, context, scratch)
            clean = clean and r.error_code is None
            append(r)
            continue
        try:
            res = rule(context)
        except Exception as exc:  # bad operator arguments at run time: GENERAL, never a 500
            append(general_error(flag, f"targeting failed: {describe(exc)}"))
            clean = False
            continue
        # The usual outcomes, inline: a variant name or null.
        if res.__class__ is str:
            r = match(res)
            if r is not None:
                append(r)
                continue
        elif res is None and default is not None:
            append(default)
            continue
        r = resolve_safely(flag, res)
        clean = clean and r.error_code is None
        append(r)
    return clean


def _run_slow(flag: Flag, context: Mapping[str, Any], scratch: _Scratch) -> EvaluationResult:
    """A flag whose rule reads ``$flagd`` (the data is the context plus it, built once per
    request), or one built without the compiler."""
    if flag.rule is None or flag.state is FlagState.DISABLED:
        return unprecomputed(flag)
    data = scratch.data
    if data is None:
        data = scratch.data = dict(context)
        scratch.ts = int(time.time())
    data["$flagd"] = {"flagKey": flag.key, "timestamp": scratch.ts}
    try:
        res = flag.rule(data)
    except Exception as exc:
        return general_error(flag, f"targeting failed: {describe(exc)}")
    if res.__class__ is str:
        r = flag.match_results.get(res)
        if r is not None:
            return r
    elif res is None and flag.default_result is not None:
        return flag.default_result
    return resolve_safely(flag, res)


def resolve_safely(flag: Flag, res: Any) -> EvaluationResult:
    """A rule's outcome that is neither a variant name nor null, as the flag's result; a
    GENERAL error (logged) when resolving it fails."""
    try:
        return resolve(flag, res)
    except Exception as exc:
        log.exception("resolving %s failed", flag.key)
        return general_error(flag, f"evaluation failed: {exc!r}")


def entry_bytes(key: Any, n_results: int) -> int:
    """Approximate heap bytes of one memo entry: the dict's slot, the key (a typed value or a
    tuple of them, its strings included: it keeps them alive) and the results' tuple."""
    if key.__class__ is tuple:
        size = 56 + 8 * len(key)
        for v in key:  # (a loop: a generator costs more than the sum of a few attributes)
            if v.__class__ is str:
                size += len(v) + 49
    else:
        size = len(key) + 49 if key.__class__ is str else 32
    return size + 64 + 56 + 8 * n_results


class Group:
    """Targeted flags that read the same attributes, and their memo: the typed values of those
    attributes -> the flags' results (a tuple, in the group's order)."""

    __slots__ = ("attrs", "flags", "hits", "key_of", "misses", "old", "old_bytes", "parent",
                 "reads", "share", "skip", "stale", "stale_steps", "steps", "young",
                 "young_bytes")

    def __init__(self, reads: frozenset[str] | None, flags: list[Flag]):
        self.reads = reads
        attrs = None if reads is None else tuple(sorted(reads))
        self.attrs = attrs  # sorted; None: unknown reads, no memo
        self.flags = tuple(flags)
        self.steps = steps_of(self.flags)
        # typed values by attribute -> this group's key (a bare value for one attribute)
        self.key_of: Callable[[dict[str, Any]], Any] = (
            itemgetter(*attrs) if attrs else (lambda _tv: ()))
        self.young: dict[Any, tuple[EvaluationResult, ...]] = {}
        self.old: dict[Any, tuple[EvaluationResult, ...]] = {}
        self.young_bytes = self.old_bytes = 0  # estimated bytes each generation holds
        self.share = MEMO_BYTES  # the bytes ``young`` may hold (its plan's budget shared out)
        self.hits = self.misses = 0
        self.skip = -1 if attrs is None else 0  # evaluations left without the memo; -1: always
        # The group of the previous version this one derives from, and the indices of the
        # flags changed since: its memo answers for the others (``patched``).
        self.parent: Group | None = None
        self.stale: tuple[int, ...] = ()
        self.stale_steps: tuple[Step, ...] = ()  # their steps (``patched`` runs them)

    def derive(self, changed: dict[int, Flag]) -> Group:
        """This group with the flags at ``changed``'s indices replaced. Its memo starts empty
        but falls back on this one's, re-running only the changed flags; only one version
        back (this group lets go of its own parent), so memos do not chain."""
        flags = list(self.flags)
        for i, flag in changed.items():
            flags[i] = flag
        group = Group(self.reads, flags)
        group.skip, group.hits, group.misses = self.skip, self.hits, self.misses
        group.share = self.share
        if self.skip == 0:
            group.parent, group.stale = self, tuple(sorted(changed))
            group.stale_steps = tuple(group.steps[i] for i in group.stale)
        self.parent, self.stale, self.stale_steps = None, (), ()
        return group

    def patched(self, key: Any, context: Mapping[str, Any], scratch: _Scratch
                ) -> tuple[EvaluationResult, ...] | None:
        """The results for ``key`` from the parent's memo with the changed flags run again,
        or None (not there, or a changed flag gave an error: the caller runs them all)."""
        parent = self.parent
        if parent is None:
            return None
        hit = parent.young.get(key) or parent.old.get(key)
        if hit is None:
            return None
        fresh: list[EvaluationResult] = []
        if not run_flags(self.stale_steps, context, scratch, fresh):
            return None
        if len(fresh) == 1:  # one flag changed: the usual case
            i = self.stale[0]
            return (*hit[:i], fresh[0], *hit[i + 1:])
        results = list(hit)
        for i, result in zip(self.stale, fresh, strict=True):
            results[i] = result
        return tuple(results)

    def remember(self, key: Any, results: tuple[EvaluationResult, ...]) -> None:
        size = entry_bytes(key, len(results))
        if len(self.young) >= MEMO_BOUND or self.young_bytes + size > self.share:
            self.old, self.old_bytes = self.young, self.young_bytes
            self.young, self.young_bytes = {}, 0
        self.young[key] = results
        self.young_bytes += size

    def review(self) -> None:
        """After WINDOW misses: is the memo worth its cost?"""
        if self.hits * (len(self.flags) + 1) < self.misses:
            self.skip = SKIP
            self.young, self.old, self.young_bytes, self.old_bytes = {}, {}, 0, 0
        self.hits = self.misses = 0


class Plan:
    """How to evaluate every flag of one flag set in bulk. ``evaluate`` gives the results of
    the dynamic flags in plan order (group by group); ``in_document_order`` merges them with
    the static ones."""

    __slots__ = ("_order", "_where", "attrs", "dynamic_keys", "groups", "lineage",
                 "pick_dynamic", "positions", "static", "static_keys", "static_positions",
                 "token")

    def __init__(self, flag_set: FlagSet):
        static: list[tuple[int, EvaluationResult]] = []
        by_reads: dict[frozenset[str] | None, list[tuple[int, Flag]]] = {}
        unknown: list[tuple[int, Flag]] = []
        for pos, flag in enumerate(flag_set.flags.values()):
            reads = _reads(flag)
            if flag.static_result is not None:
                static.append((pos, flag.static_result))
            elif reads is None:
                unknown.append((pos, flag))
            else:
                by_reads.setdefault(reads, []).append((pos, flag))
        groups = [Group(reads, [f for _p, f in members]) for reads, members in by_reads.items()]
        positions = [p for members in by_reads.values() for p, _f in members]
        if unknown:
            groups.append(Group(None, [f for _p, f in unknown]))
            positions += [p for p, _f in unknown]
        for group in groups:
            group.share = max(MIN_GROUP_BYTES, MEMO_BYTES // len(groups))
        self.groups = tuple(groups)
        self.static = tuple(r for _p, r in static)  # in document order
        self.static_keys = tuple(r.key for r in self.static)
        self.static_positions = tuple(p for p, _r in static)
        self.positions = tuple(positions)  # document positions of the dynamic results
        # document-order results -> the dynamic ones, plan order
        self.pick_dynamic = picker(self.positions)
        self.dynamic_keys = tuple(f.key for g in groups for f in g.flags)
        # every attribute a memoised group reads, typed once per request
        self.attrs = tuple(sorted({a for g in groups if g.attrs for a in g.attrs}))
        # static results + dynamic results -> document order
        where = [p for p, _r in static] + positions
        inverse = [0] * len(where)
        for i, p in enumerate(where):
            inverse[p] = i
        self._order = picker(inverse)
        self._where: dict[str, tuple[int, int]] | None = None
        self.token = object()  # this plan's identity for the plans derived from it
        # (token of an ancestor, static keys changed since), newest first: what a body
        # layout built for an ancestor must redo (proxy.api.bulk_body)
        self.lineage: tuple[tuple[object, frozenset[str]], ...] = ()

    def where(self) -> dict[str, tuple[int, int]]:
        """key -> (-1, index in ``static``) or (group index, index in the group)."""
        if self._where is None:
            where = {key: (-1, i) for i, key in enumerate(self.static_keys)}
            for g, group in enumerate(self.groups):
                where.update((f.key, (g, i)) for i, f in enumerate(group.flags))
            self._where = where
        return self._where

    def derive(self, flag_set: FlagSet, changed: Iterable[str]) -> Plan | None:
        """The plan of ``flag_set``: this plan's flag set with only the flags named in
        ``changed`` replaced (the same keys, in the same order), or None when that changes the
        plan's shape (a flag turned static or targeted, or reads other attributes). Groups
        whose flags did not change are shared with this plan, memo and all: their results
        are the same objects. A change costs a request O(changed flags), not O(flags)."""
        where = self.where()
        if len(flag_set.flags) != len(where):
            return None
        static: list[EvaluationResult] | None = None
        members: dict[int, dict[int, Flag]] = {}
        changed_static = set()
        for key in changed:
            place, flag = where.get(key), flag_set.flags.get(key)
            if place is None or flag is None:
                return None
            g, i = place
            if g < 0:
                if flag.static_result is None:
                    return None
                if static is None:
                    static = list(self.static)
                static[i] = flag.static_result
                changed_static.add(key)
            else:
                group = self.groups[g]
                if _reads(flag) != group.reads or flag.static_result is not None:
                    return None
                members.setdefault(g, {})[i] = flag
        plan = Plan.__new__(Plan)
        for name in ("_order", "_where", "attrs", "dynamic_keys", "pick_dynamic", "positions",
                     "static_keys", "static_positions"):
            setattr(plan, name, getattr(self, name))
        plan.static = self.static if static is None else tuple(static)
        plan.groups = tuple(group.derive(members[g]) if g in members else group
                            for g, group in enumerate(self.groups))
        plan.token = object()
        done = frozenset(changed_static)
        plan.lineage = ((self.token, done),
                        *((t, keys | done) for t, keys in self.lineage[:LINEAGE - 1]))
        return plan

    def evaluate(self, context: Mapping[str, Any]) -> list[EvaluationResult]:
        """The dynamic flags' results, plan order. ``context`` must be valid (a mapping whose
        targetingKey, if any, is a string): ``engine.evaluate_all`` checks it."""
        get = context.get
        tv = {a: typed(get(a, MISSING)) for a in self.attrs}
        scratch = _Scratch()
        out: list[EvaluationResult] = []
        for group in self.groups:
            if group.skip:  # no memo: unknown reads, or one that did not pay
                if group.skip > 0:
                    group.skip -= 1
                run_flags(group.steps, context, scratch, out)
                continue
            key = group.key_of(tv)
            try:
                hit = group.young.get(key)
            except TypeError:  # an object or array among its attributes: no memo
                run_flags(group.steps, context, scratch, out)
                continue
            if hit is None:
                hit = group.old.get(key)
                if hit is None and group.parent is not None:
                    hit = group.patched(key, context, scratch)
                if hit is not None:
                    group.remember(key, hit)  # still in use
            if hit is not None:
                group.hits += 1
                out += hit
                continue
            n = len(out)
            if run_flags(group.steps, context, scratch, out):
                group.remember(key, tuple(out[n:]))
            group.misses += 1
            if group.misses >= WINDOW:
                group.review()
        return out

    def in_document_order(self, dynamic: Sequence[EvaluationResult]) -> list[EvaluationResult]:
        return list(self._order(self.static + tuple(dynamic)))


def _reads(flag: Flag) -> frozenset[str] | None:
    """The group a targeted flag belongs in (None: evaluated every time)."""
    if flag.rule is None or flag.state is FlagState.DISABLED:
        return None
    return flag.reads


def derive_plan(previous: FlagSet, flag_set: FlagSet) -> None:
    """Give ``flag_set``, the next version of ``previous``, a plan derived from
    ``previous``'s when that one was built and both hold the same keys in the same order
    (:meth:`Plan.derive`: what changed is found by comparing the Flag objects, so nothing
    is assumed of how the new version was made); else it is built on first use."""
    plan = previous.plan
    old, new = previous.flags, flag_set.flags
    if plan is None or flag_set.plan is not None or len(old) != len(new) or list(old) != list(new):
        return
    derived = plan.derive(flag_set, [k for k, f in new.items() if old[k] is not f])
    if derived is not None:
        object.__setattr__(flag_set, "plan", derived)


def memo_bytes(flag_set: FlagSet | None) -> int:
    """The estimated bytes a flag set's plan memos hold (0 without a plan), the parents'
    its derived groups fall back on included."""
    plan = None if flag_set is None else flag_set.plan
    if plan is None:
        return 0
    total = 0
    for group in plan.groups:
        total += group.young_bytes + group.old_bytes
        if group.parent is not None:
            total += group.parent.young_bytes + group.parent.old_bytes
    return total


def plan_of(flag_set: FlagSet) -> Plan:
    """The flag set's plan, built on first use and kept on it: a FlagSet never changes, so
    neither does its plan (a new version is a new FlagSet, and the old plan goes with it)."""
    plan = flag_set.plan
    if plan is None:
        plan = Plan(flag_set)
        object.__setattr__(flag_set, "plan", plan)
    return plan  # type: ignore[no-any-return]
