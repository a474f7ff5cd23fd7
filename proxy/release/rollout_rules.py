"""Progressive rollouts as flagd-native rules (DESIGN §10), without I/O: the rollout record,
the targeting that ramps by itself, and the static rules a pause, an abort and the cleanup
write.

The rule, for steps ``p1 < ... < pn`` starting at ``start`` every ``every`` seconds (the
boundaries ``b_i = start + i * every`` are literal integers: ``$flagd.timestamp`` is whole
seconds)::

    {"if": [{"<": [T, b_0]}, PREVIOUS,
            {"<": [T, b_1]}, STEP(p1),
            ...
            STEP(pn)]}
    STEP(p) = {"if": [{"==": [{"fractional": [["in", p], ["out", 100 - p]]}, "in"]},
                      VARIANT, PREVIOUS]}

with ``T = {"var": "$flagd.timestamp"}`` and PREVIOUS the flag's targeting before the
rollout (null when it had none: the default variant). Every ``fractional`` buckets by its
default key, flag key + targetingKey, so a user's bucket is the same at every step: in the
variant at ``p`` means bucket < p, hence < every later (larger) percentage; a user PREVIOUS
put in the variant gets PREVIOUS again at every step. Nobody in the variant ever leaves it
(tests/unit/release/test_rollout_rules.py checks it through the real evaluator). A user
without a targetingKey has no bucket (``fractional`` is null) and gets PREVIOUS until the
cleanup at 100 % makes the variant the default.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.model import JSON

STATES = ("running", "paused", "aborted", "done")
TIMESTAMP: dict[str, Any] = {"var": "$flagd.timestamp"}
IN, OUT = "in", "out"  # the two buckets' names: compared in the rule, never served


class RolloutError(ValueError):
    """The rollout does not fit the flag or its state (exit 1); the message says which."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """One flag's rollout as stored in ``flagedge:{ENV}:rollouts`` (JSON: :meth:`to_json`).
    ``version`` is the environment version its last rule write made (added by the script);
    ``paused_at`` the Redis time of a pause (the step it froze at)."""

    steps: tuple[int, ...]
    every: int  # seconds
    start: int  # Unix seconds
    variant: str
    previous_targeting: JSON
    state: str = "running"
    author: str = ""
    paused_at: float | None = None
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"steps": list(self.steps), "every": self.every, "start": self.start,
               "variant": self.variant, "previous_targeting": self.previous_targeting,
               "state": self.state, "author": self.author}
        if self.paused_at is not None:
            out["paused_at"] = self.paused_at
        if self.version is not None:
            out["version"] = self.version
        return out

    def head(self) -> bytes:
        """The JSON without ``version`` and its closing brace: the write script appends
        ``,"version":N}``."""
        return orjson.dumps(dataclasses.replace(self, version=None).to_json())[:-1]

    def replace(self, **fields: Any) -> Rollout:
        return dataclasses.replace(self, **fields)

    @classmethod
    def from_json(cls, raw: bytes | Mapping[str, Any]) -> Rollout:
        doc = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
        try:
            return cls(tuple(int(s) for s in doc["steps"]), int(doc["every"]),
                       int(doc["start"]), str(doc["variant"]), doc.get("previous_targeting"),
                       str(doc["state"]), str(doc.get("author", "")),
                       None if doc.get("paused_at") is None else float(doc["paused_at"]),
                       None if doc.get("version") is None else int(doc["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a rollout record: {exc!r}") from None

    def boundary(self, step: int) -> int:
        """When step ``step`` (0-based) begins."""
        return self.start + step * self.every

    @property
    def end(self) -> int:
        """When the last step begins: from then on the rule is static, so the cleanup is due."""
        return self.boundary(len(self.steps) - 1)

    def step_at(self, now: float) -> int:
        """The 0-based step in force at ``now`` (the rule's ``<`` tests); -1 before start."""
        if now < self.start:
            return -1
        return min(int((int(now) - self.start) // self.every), len(self.steps) - 1)

    def percent_at(self, now: float) -> int | None:
        step = self.step_at(now)
        return None if step < 0 else self.steps[step]


def parse_steps(text: str) -> tuple[int, ...]:
    """``"5,25,50,100"`` -> (5, 25, 50, 100); raises RolloutError naming what is wrong."""
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise RolloutError(f"--steps {text!r}: use whole percentages separated by commas "
                           "(5,25,50,100)") from None
    check_steps(steps)
    return steps


def check_steps(steps: tuple[int, ...]) -> None:
    if not steps:
        raise RolloutError("--steps needs at least one percentage")
    if any(not 1 <= s <= 100 for s in steps):
        raise RolloutError(f"--steps {_show(steps)}: every step must be from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise RolloutError(f"--steps {_show(steps)}: steps must be strictly increasing")


def _show(steps: tuple[int, ...]) -> str:
    return ",".join(str(s) for s in steps)


def plan(key: str, flag: Any, *, variant: str, steps: tuple[int, ...], every: float,
         start: float, author: str = "") -> Rollout:
    """A new running rollout of ``flag`` (its JSON as stored); raises RolloutError when the
    flag, variant, steps or period do not fit."""
    if not isinstance(flag, dict) or not isinstance(flag.get("variants"), dict):
        raise RolloutError(f"flag {key} has no variants map: fix it with a push")
    if variant not in flag["variants"]:
        raise RolloutError(f"flag {key} has no variant {variant!r} (variants: "
                           f"{', '.join(sorted(flag['variants']))})")
    check_steps(steps)
    if not every > 0 or every != int(every):
        raise RolloutError(f"--every must be a positive whole number of seconds, got {every}")
    previous = flag.get("targeting") or None  # {} is flagd's "no targeting" too
    if previous is None and flag.get("defaultVariant") == variant:
        raise RolloutError(f"flag {key} already serves {variant} to everyone (its default "
                           "variant, no targeting): nothing to roll out")
    return Rollout(tuple(steps), int(every), math.ceil(start), variant,
                   copy.deepcopy(previous), author=author)


def step_rule(rollout: Rollout, percent: int) -> JSON:
    """``percent`` % of users (by bucket) get the variant; the others the previous rule."""
    buckets = [[IN, percent], [OUT, 100 - percent]]
    return {"if": [{"==": [{"fractional": buckets}, IN]}, rollout.variant,
                   copy.deepcopy(rollout.previous_targeting)]}


def ramp_rule(rollout: Rollout) -> JSON:
    """The whole rollout as one rule (see the module docstring)."""
    chain: list[Any] = [{"<": [dict(TIMESTAMP), rollout.start]},
                        copy.deepcopy(rollout.previous_targeting)]
    for i, percent in enumerate(rollout.steps[:-1]):
        chain += [{"<": [dict(TIMESTAMP), rollout.boundary(i + 1)]}, step_rule(rollout, percent)]
    chain.append(step_rule(rollout, rollout.steps[-1]))
    return {"if": chain}


def with_targeting(flag: Mapping[str, Any], targeting: JSON) -> dict[str, Any]:
    """``flag`` with ``targeting`` (None: none at all)."""
    new = copy.deepcopy(dict(flag))
    if targeting is None:
        new.pop("targeting", None)
    else:
        new["targeting"] = targeting
    return new


def started(flag: Mapping[str, Any], rollout: Rollout) -> dict[str, Any]:
    return with_targeting(flag, ramp_rule(rollout))


def frozen(flag: Mapping[str, Any], rollout: Rollout, percent: int | None) -> dict[str, Any]:
    """The flag frozen at ``percent`` without the timestamp chain (a pause): the step's rule;
    None (before start): the previous targeting."""
    if percent is None:
        return with_targeting(flag, rollout.previous_targeting)
    return with_targeting(flag, step_rule(rollout, percent))


def finished(flag: Mapping[str, Any], rollout: Rollout) -> dict[str, Any]:
    """The static rule the cleanup writes after the last boundary. Below 100 %: the last
    step's rule. At 100 %: the variant becomes the default and the targeting goes: the last
    step already gave every bucketed user the variant whatever PREVIOUS said, so dropping
    PREVIOUS changes nothing for them, and users without a targetingKey (who had PREVIOUS)
    now get the variant too, which is what "100 %" promises (the change log keeps PREVIOUS:
    ``flagedge rollback`` restores it)."""
    if rollout.steps[-1] < 100:
        return frozen(flag, rollout, rollout.steps[-1])
    new = with_targeting(flag, None)
    new["defaultVariant"] = rollout.variant
    return new


def aborted(flag: Mapping[str, Any], rollout: Rollout) -> dict[str, Any]:
    return with_targeting(flag, rollout.previous_targeting)


def is_ramping(flag: Any, rollout: Rollout) -> bool:
    """Whether the flag still has this rollout's ramp (a push may have replaced it)."""
    return isinstance(flag, dict) and flag.get("targeting") == ramp_rule(rollout)
