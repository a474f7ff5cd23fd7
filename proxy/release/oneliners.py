"""One-line flag operations (DESIGN §10): ``flagedge flag KEY --env ENV (--default VARIANT |
--enable | --disable | --percent N [--variant V])``, as pure edits of one flag's JSON. The
command (and the admin API) turn the edited flag into an ordinary plan (:func:`plan_edit`)
and write it through the push path (or a change request where the environment is
protected).

What each does to the flag:

- ``--default V``: ``defaultVariant`` = V. Targeting is kept: users it matches still get
  what it returns; everyone else gets V.
- ``--enable`` / ``--disable``: ``state`` ENABLED / DISABLED (a disabled flag is the kill
  switch: evaluations answer an error and clients fall back to their code default).
  ``--disable`` is a kill operation.
- ``--percent N [--variant V]``: ``targeting`` becomes exactly ``{"fractional": [[V, N],
  [default, 100 - N]]}`` (the default bucketing key: flag key + targetingKey, so raising N
  keeps everyone already in V in it). Any previous targeting is **replaced**, not wrapped:
  the change entry's ``before`` keeps it and ``flagedge rollback`` restores it. V defaults
  to the one variant other than the default when the flag has exactly two.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from proxy.release.changeset import Document, Plan, make_plan
from proxy.release.publisher import parse_document

if TYPE_CHECKING:
    from proxy.release.publisher import RemoteState

KINDS = ("default", "enable", "disable", "percent")


class FlagEditError(ValueError):
    """The operation does not fit the flag (exit 1); the message names flag and variant."""


@dataclass(frozen=True, slots=True)
class FlagOp:
    kind: str  # one of KINDS
    variant: str | None = None  # --default V, --percent's --variant V
    percent: int | None = None

    @property
    def is_kill(self) -> bool:
        return self.kind == "disable"

    def describe(self) -> str:
        if self.kind == "default":
            return f"default variant {self.variant}"
        if self.kind == "percent":
            return f"{self.percent}% {self.variant or '(the other variant)'}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Edit:
    flag: dict[str, Any]  # the flag after the operation
    summary: str  # "25% on", "default variant off", "disable"
    warnings: tuple[str, ...] = ()  # for the person: targeting replaced


def edit(key: str, flag: Any, op: FlagOp) -> Edit:
    """The flag after ``op``; raises FlagEditError naming the flag and the variant when it
    does not fit."""
    if not isinstance(flag, dict) or not isinstance(flag.get("variants"), dict):
        raise FlagEditError(f"flag {key} has no variants map: fix it with a push")
    new, warnings = copy.deepcopy(flag), ()
    variants = sorted(flag["variants"])
    if op.kind == "enable":
        new["state"] = "ENABLED"
    elif op.kind == "disable":
        new["state"] = "DISABLED"
    elif op.kind == "default":
        new["defaultVariant"] = _variant(key, op.variant, variants)
    elif op.kind == "percent":
        new["targeting"], warnings = _percent(key, flag, op, variants)
        op = FlagOp("percent", new["targeting"]["fractional"][0][0], op.percent)
    else:
        raise FlagEditError(f"unknown flag operation {op.kind!r}")
    return Edit(new, op.describe(), tuple(warnings))


def plan_edit(state: RemoteState, key: str, op: FlagOp) -> tuple[Plan, Edit]:
    """The plan of ``op`` on flag ``key`` of the stored ``state``, and the edit. Raises
    LookupError for a missing environment or flag, FlagEditError for an edit that does not
    fit, InvalidDocument for a flag that would not validate."""
    if not state.exists:
        raise LookupError(f"environment {state.env} does not exist in Redis")
    current = state.document()
    if key not in current.flags:
        raise LookupError(f"flag {key} is not in environment {state.env} (version "
                          f"{state.version}): add it with a push")
    change = edit(key, current.flags[key], op)
    # Validate the edited flag with the evaluators it may reference (not the other flags:
    # one broken elsewhere must not block a kill switch here).
    parse_document(orjson.dumps({"flags": {key: change.flag},
                                 "$evaluators": dict(current.evaluators)}),
                   source=f"flag {key}")
    new = Document({**current.flags, key: change.flag}, current.evaluators, current.metadata)
    return make_plan(current, new), change


def _variant(key: str, name: str | None, variants: list[str]) -> str:
    if name not in variants:
        raise FlagEditError(f"flag {key} has no variant {name!r} (variants: "
                            f"{', '.join(variants)})")
    return str(name)


def _percent(key: str, flag: dict[str, Any], op: FlagOp,
             variants: list[str]) -> tuple[dict[str, Any], list[str]]:
    if op.percent is None or not 0 <= op.percent <= 100:
        raise FlagEditError(f"--percent must be a whole number from 0 to 100, got {op.percent}")
    default = flag.get("defaultVariant")
    if default not in variants:
        raise FlagEditError(f"flag {key} has no default variant to split against: set one "
                            "with --default")
    if op.variant is None:
        others = [v for v in variants if v != default]
        if len(others) != 1:
            raise FlagEditError(f"flag {key} has {len(variants)} variants "
                                f"({', '.join(variants)}): say which gets the percentage "
                                "with --variant V")
        target = others[0]
    else:
        target = _variant(key, op.variant, variants)
    if target == default:
        raise FlagEditError(f"--variant {target} is flag {key}'s default variant: pick "
                            "another, or change the default with --default")
    warnings = []
    old = flag.get("targeting")
    if old not in (None, {}) and not (isinstance(old, dict) and list(old) == ["fractional"]):
        warnings.append(f"flag {key}: its previous targeting is replaced (the change log "
                        "keeps it; flagedge rollback restores it)")
    return {"fractional": [[target, op.percent], [default, 100 - op.percent]]}, warnings
