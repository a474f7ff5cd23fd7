"""Typed, immutable values shared by every layer: flags, flag sets and evaluation results.

Nothing here knows about Redis, HTTP or JsonLogic; the evaluation package produces these
objects and the API serialises them.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

import orjson

JSON: TypeAlias = Any


def canonical(value: JSON) -> bytes:
    """The stored form of a flag / evaluators / metadata value: sorted keys, compact. Both
    sides compare in it (the write side's diff, the read side's "did this flag change?"), so
    reformatting a file is not a change while ``1`` vs ``1.0`` vs ``true`` still are."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

Scalar: TypeAlias = str | int | float | bool
#: A compiled targeting rule: takes the rule data (request context plus ``$flagd``) and returns
#: the raw JsonLogic result (a variant name, a bool, ``None``...). It may raise on bad runtime
#: input; the engine turns that into a GENERAL error.
Rule: TypeAlias = Callable[[Mapping[str, Any]], Any]


class FlagState(StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class Reason(StrEnum):
    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


class FractionalHash(StrEnum):
    """How flagd's ``fractional`` hashes its bucketing value, chosen per environment
    (DESIGN §9): ``v2`` murmur3 of ``flagKey + targetingKey`` (or of the bucketBy string) as
    UTF-8; ``v3`` murmur3 of the canonical CBOR of ``[flagKey, targetingKey]`` or of the
    evaluated bucketBy value (openfeature-flagd-core 2.x). A change re-buckets users."""

    V2 = "v2"
    V3 = "v3"

    @classmethod
    def parse(cls, raw: object) -> FractionalHash:
        """A stored or declared setting; raises ValueError naming the allowed values."""
        try:
            return cls(raw)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown fractional hashing {raw!r} (use {allowed})") from None


DEFAULT_FRACTIONAL_HASH = FractionalHash.V2


class VariantType(StrEnum):
    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    OBJECT = "object"


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The outcome of evaluating one flag for one context.

    A value exists exactly when ``variant`` is not None and there is no error: DISABLED flags
    and flags without a usable default carry no value, so the client falls back to its code
    default.
    """

    key: str
    reason: Reason
    variant: str | None = None
    value: JSON = None
    metadata: Mapping[str, Scalar] = field(default_factory=dict)
    error_code: ErrorCode | None = None
    error_details: str | None = None
    # Chosen by an experiment flag's ``fractional`` split (DESIGN §11: only those users are
    # assigned); never on the wire, where the reason stays flagd's.
    assigned: bool = field(default=False, compare=False)

    @property
    def has_value(self) -> bool:
        return self.variant is not None and self.error_code is None

    def to_ofrep(self) -> dict[str, Any]:
        """OFREP success or inline-failure body. ``value`` is omitted, never null, when there
        is none; ``variant`` is always present on success (the Python provider reads it)."""
        if self.error_code is not None:
            return {
                "key": self.key,
                "errorCode": self.error_code.value,
                "errorDetails": self.error_details or "",
            }
        body: dict[str, Any] = {"key": self.key, "reason": self.reason.value, "variant": self.variant}
        if self.variant is not None:
            body["value"] = self.value
        body["metadata"] = dict(self.metadata)
        return body


class Assigned(str):
    """A variant name a ``fractional`` split chose, in an experiment flag's rule: the rule's
    outcome is then a split assignment (DESIGN §11), not a variant some condition named."""

    __slots__ = ()


def error_result(key: str, code: ErrorCode, details: str) -> EvaluationResult:
    return EvaluationResult(key=key, reason=Reason.ERROR, error_code=code, error_details=details)


@dataclass(frozen=True, slots=True)
class Flag:
    """One compiled flag. ``raw`` is the flag's JSON exactly as written (export, diff, the
    rules stream); the rest is derived from it once, at compile time."""

    key: str
    state: FlagState
    variants: Mapping[str, JSON]
    variant_type: VariantType
    default_variant: str | None
    metadata: Mapping[str, Scalar]  # flag-set metadata merged under the flag's own
    raw: Mapping[str, JSON]
    rule: Rule | None = None  # None: no targeting, the result is static
    static_result: EvaluationResult | None = None  # precomputed for static and disabled flags
    uses_timestamp: bool = False  # reads $flagd.timestamp (see ``boundaries``)
    # The Unix seconds at which the result may change with no write: () when the rule does
    # not read the clock, None when it reads it other than compared with literal numbers.
    boundaries: tuple[int, ...] | None = ()
    refs: frozenset[str] = frozenset()  # $evaluators names used (recompile when they change)
    # Precomputed by the compiler so the hot path allocates no result objects:
    match_results: Mapping[str, EvaluationResult] = field(default_factory=dict)  # per variant
    default_result: EvaluationResult | None = None  # reason DEFAULT (targeting gave null)
    reads_flagd: bool = True  # rule reads $flagd or the whole data (else the context is passed as is)
    # Top-level context attributes the result can depend on; None: unknown (the whole data, a
    # name computed at run time, $flagd.timestamp), or a Flag built without the compiler.
    reads: frozenset[str] | None = None
    # Why this flag is served as an error (an invalid definition a source held anyway: a
    # file, a direct Redis write); empty for a valid flag. Its static_result is that error.
    problems: tuple[Problem, ...] = ()
    # The rule uses ``fractional`` (itself or through ``$ref``): compiled for one hashing
    # generation, so a change of the environment's generation recompiles it.
    fractional: bool = False
    # An experiment (metadata kind "experiment" or an experimentId, no $flagd.timestamp):
    # the revision its assignments are recorded under (a content hash of everything that
    # decides them, so a changed split starts a new analysis); None otherwise.
    experiment: str | None = None
    assigned_results: Mapping[str, EvaluationResult] = field(default_factory=dict)
    # Default and static results of this flag's earlier versions (same variants and
    # metadata), by (reason, variant): a flag switched back to an outcome it had gets that
    # very object again (``proxy.evaluation.flags.keep_results``). At most a few per variant.
    earlier: Mapping[tuple[Reason, str | None], EvaluationResult] = field(
        default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class FlagSet:
    """An immutable snapshot of one environment's rules. Readers hold a reference; writers
    build a new one and swap it in, so nobody sees half a change."""

    flags: Mapping[str, Flag]
    evaluators: Mapping[str, JSON] = field(default_factory=dict)
    metadata: Mapping[str, Scalar] = field(default_factory=dict)
    version: int = 0
    epoch: str = ""
    updated_at: float = 0.0  # Unix seconds of the write that produced this version
    uses_timestamp: bool = False  # any flag reads $flagd.timestamp
    #: When any flag's result may change with no write (Unix seconds, sorted: the union of
    #: its evaluated flags'); () for none, None when some flag reads the clock otherwise than
    #: compared with literal numbers (any second may change it: results are not cached).
    boundaries: tuple[int, ...] | None = ()
    # Context attributes any flag's result can depend on, targetingKey always among them (a
    # bad one is an error for every flag); None when some flag's reads are unknown.
    reads: frozenset[str] | None = None
    # The write that produced this version: the Redis change-log entry id ("" for files).
    # After a failover to a lagging replica, Redis can hold another version 10 than the one
    # served before; the revision is what tells them apart.
    revision: str = ""
    #: Definitions the source holds but could not serve as written: flag key -> its problems
    #: (served as an error, or its last good version kept); "" for set-level ones
    #: ($evaluators, metadata). Empty when every definition is valid.
    rejected: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict, compare=False)
    #: How every ``fractional`` of this set hashes (its flags are compiled for it). Not part
    #: of :meth:`to_document`: flagd documents (files aside, ``$fractionalHash``) never carry it.
    fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH
    #: Keys of its experiment flags (``Flag.experiment``): evaluations record assignments.
    experiments: tuple[str, ...] = field(default=(), compare=False)
    #: This state's id on streams, in ETags and cache keys (:func:`state_id`); computed once.
    state_id: str = field(init=False, compare=False, repr=False, default="")
    #: How to evaluate every flag in bulk (proxy.evaluation.plan.plan_of), built on first use.
    #: A cache on the snapshot, not state: it dies with the FlagSet (a side dict would need
    #: weak references, and this frozen, slotted class has no __weakref__ slot).
    plan: Any = field(init=False, compare=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_id", state_id(self.version, self.epoch, self.revision))

    def interval(self, now: float) -> int:
        """Which stretch between two boundaries ``now`` falls in (0 before the first): results
        cached, ETags and stream ids of one interval hold until the next boundary."""
        return bisect.bisect_right(self.boundaries, now) if self.boundaries else 0

    def next_boundary(self, now: float) -> int | None:
        """The first boundary after ``now`` (None: no boundary is ahead, or unknown)."""
        if not self.boundaries:
            return None
        i = bisect.bisect_right(self.boundaries, now)
        return self.boundaries[i] if i < len(self.boundaries) else None

    def stream_id(self, now: float) -> str:
        """The id of this state on the events and evaluated streams at ``now``: the state id,
        with the interval appended (``VERSION-TAG~I``) when results change at boundaries,
        so that a client resuming across a boundary is told what changed (DESIGN §5)."""
        if not self.boundaries:
            return self.state_id
        return f"{self.state_id}{BOUNDARY_SEP}{self.interval(now)}"

    def to_document(self) -> dict[str, JSON]:
        """The flagd flag-definition document for these rules (as written, key-sorted)."""
        doc: dict[str, JSON] = {"flags": {k: dict(self.flags[k].raw) for k in sorted(self.flags)}}
        if self.evaluators:
            doc["$evaluators"] = {k: self.evaluators[k] for k in sorted(self.evaluators)}
        if self.metadata:
            doc["metadata"] = dict(self.metadata)
        return doc


def state_id(version: int, epoch: str, revision: str) -> str:
    """``VERSION-TAG``: the id of one state of an environment, carried by stream ``id:``
    lines, ``Last-Event-ID``, OFREP notification etags and ``/v1/rules`` ETags (DESIGN §5).
    The tag hashes the epoch and the revision, so a version number of another epoch (Redis
    lost its data and was re-published) or of another write (a failover lost the one we saw)
    never passes for the state a client holds. Every replica computes the same id from Redis.
    """
    tag = hashlib.blake2b(f"{epoch}\x00{revision}".encode(), digest_size=4).hexdigest()
    return f"{version}-{tag}"


BOUNDARY_SEP = "~"


def split_stream_id(raw: str) -> tuple[str, int | None]:
    """A stream id's state id and interval (None: a plain state id, see FlagSet.stream_id)."""
    state, sep, part = raw.partition(BOUNDARY_SEP)
    if sep and part.isascii() and part.isdigit() and len(part) <= 9:
        return state, int(part)
    return raw, None


def id_version(raw: str | None) -> int | None:
    """The version number of a state id (or of a bare version, as older servers sent)."""
    head = (raw or "").strip().partition("-")[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 18 else None


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem, located by a JSON path such as
    ``flags.checkout.targeting.if[0].fractional[2]``."""

    path: str
    message: str
    #: The error flagd gives for the flag at evaluation time (a rule naming no variant is
    #: GENERAL there; what its engine cannot compile, PARSE_ERROR).
    code: ErrorCode = ErrorCode.PARSE_ERROR
    #: flagedge refuses it at write time (push, validate) where flagd only answers null at
    #: evaluation time (wrong arity of flagd's operators, an invalid literal sem_ver target):
    #: a source that holds it serves the flag as flagd does.
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDocument(ValueError):
    """Raised when rules cannot be served; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems[:5]) + (" ..." if len(problems) > 5 else ""))


@dataclass(frozen=True, slots=True)
class Change:
    """What one publish changed in one environment."""

    env: str
    version: int
    upserted: frozenset[str] = frozenset()  # flag keys added or changed
    deleted: frozenset[str] = frozenset()  # flag keys removed
    evaluators_changed: bool = False
    metadata_changed: bool = False
    reset: bool = False  # whole set replaced (load, resync, new epoch): recompute everything
    written_at: float | None = None  # Unix seconds of the source write, for propagation metrics
    applied_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One versioned write as the change log ``flagedge:{ENV}:changes`` stores it (DESIGN §3).

    ``after`` is ``{"flags": {key: flag | null}, "$evaluators"?: {...}, "metadata"?: {...}}``
    (null: deleted; evaluators and metadata are the complete new maps); ``before`` has the
    same shape with the touched state before the write. Either is None when another tool
    stored JSON that does not parse: the record is still listed, never replayed or undone.
    """

    id: str
    version: int  # -1 when the entry carries no readable version
    epoch: str
    op: str
    at: float  # Unix seconds of the write
    author: str
    message: str
    before: Mapping[str, JSON] | None
    after: Mapping[str, JSON] | None
    # Release control (DESIGN §10): the change request this write applied and whose
    # approvals counted; or the mark of a direct write to a protected environment.
    request: int | None = None
    approvers: tuple[str, ...] = ()
    kill: bool = False
    break_glass: bool = False
    # Who wrote it when not the author: "scheduler" (the release worker applied a scheduled
    # request on behalf of its author and approvers); "" when the author did.
    applied_by: str = ""

    @property
    def readable(self) -> bool:
        return self.before is not None and self.after is not None

    @property
    def flags(self) -> list[str]:
        """The flag keys the write touched, sorted."""
        return sorted((self.after or {}).get("flags", {}))
