"""What the UI's pages show, read the way the admin API reads it (``proxy.release.publisher``
and ``proxy.storage``), or, when Redis cannot be read (file mode, Redis down), from what this
proxy serves (the ``Store``): never a blank page, and a banner saying which it is.

Blocking: the Redis readers run in a worker thread (redis-py's sync client, as the admin API).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.model import VariantType
from proxy.release import publisher, review
from proxy.release.rollout_rules import Rollout
from proxy.storage import policy, rollouts
from proxy.store import Store
from proxy.ui.insight_pages import EnvInsight, FlagInsight, read_insights

# Where a page's data came from: Redis (live, the admin API's view) or the proxy's own copy.
LIVE, FILE, CACHED = "redis", "file", "cached"


@dataclass(frozen=True, slots=True)
class FlagRow:
    key: str
    state: str  # ENABLED | DISABLED
    type: str  # boolean | string | number | object | mixed
    variants: tuple[str, ...]
    default: str | None
    rollout: str  # "" when none runs, else e.g. "running: 25 % (step 2 of 4)"
    insight: FlagInsight | None = None  # None: not read (another page, or Redis unreadable)

    @property
    def stale(self) -> bool:
        return self.insight is not None and self.insight.stale is not None

    def matches(self, query: str) -> bool:
        """The search filter: the query (case-insensitive) in the key, a variant or the type."""
        q = query.strip().lower()
        return not q or q in self.key.lower() or q == self.type or any(
            q in v.lower() for v in self.variants)


@dataclass(frozen=True, slots=True)
class EnvView:
    env: str
    source: str  # LIVE, FILE or CACHED
    version: int | None  # None: this proxy has not loaded the environment
    flags: tuple[FlagRow, ...] = ()
    updated_at: float | None = None
    updated_by: str = ""
    policy: policy.Policy | None = None  # None: unknown (Redis not read)
    problem: str = ""  # why the page is read-only, for the banner
    counts: dict[str, int] = field(default_factory=dict)
    insight: EnvInsight | None = None  # the flags list's insight columns (read_live(insights))

    @property
    def read_only(self) -> bool:
        return self.source != LIVE


def read_live(client: Any, env: str, *, insights: bool = False,
              requests: bool = False) -> EnvView:
    """The environment as Redis holds it (raises redis/OS errors when Redis is down);
    ``insights``: with each flag's exposures, last evaluation and stale marker (the flags
    list: ``proxy.ui.insight_pages``); ``requests``: with ``counts["requests"]``, the open
    change requests (the environment page: reading every request is not every page's)."""
    state = publisher.read_state(client, env)
    doc = state.document()
    raw_rollouts = rollouts.read_all(client, env)
    now = review.redis_now(client, env) if raw_rollouts else 0.0
    running = {key: rollout_label(raw, now) for key, raw in raw_rollouts.items()}
    rows = flag_rows(doc.flags, running)
    insight = read_insights(client, env, sorted(state.raw_flags), time.time()) \
        if insights and state.exists else None
    if insight is not None:
        rows = tuple(replace(r, insight=insight.flags.get(r.key)) for r in rows)
    return EnvView(env, LIVE, state.version if state.exists else None, rows,
                   updated_at=float(state.meta["updated_at"]) if "updated_at" in state.meta
                   else None, updated_by=state.meta.get("updated_by", ""),
                   policy=policy.read(client, env),
                   counts={**counts(rows), **({"requests": open_requests(client, env)}
                                              if requests else {})},
                   insight=insight)


def open_requests(client: Any, env: str) -> int:
    """Change requests of ``env`` still open (awaiting approval or their apply time)."""
    return sum(r.state == "open" for r in review.list_requests(client, env))


def read_served(store: Store, env: str, source: str, problem: str) -> EnvView:
    """The environment as this proxy serves it (no Redis): the policy and rollouts are
    unknown here, so the page says so instead of guessing."""
    flag_set = store.get(env)
    if flag_set is None:
        return EnvView(env, source, None, problem=problem)
    rows = flag_rows({key: flag.raw for key, flag in flag_set.flags.items()}, {})
    return EnvView(env, source, flag_set.version, rows,
                   updated_at=flag_set.updated_at or None, problem=problem, counts=counts(rows))


def flag_rows(flags: Mapping[str, Any], running: Mapping[str, str]) -> tuple[FlagRow, ...]:
    rows = []
    for key in sorted(flags):
        raw = flags[key] if isinstance(flags[key], Mapping) else {}
        variants = raw.get("variants") if isinstance(raw.get("variants"), Mapping) else {}
        default = raw.get("defaultVariant")
        rows.append(FlagRow(key, str(raw.get("state", "")), type_of(variants),
                            tuple(sorted(variants)),
                            default if isinstance(default, str) else None,
                            running.get(key, "")))
    return tuple(rows)


def type_of(variants: Mapping[str, Any]) -> str:
    """The flag's value type as flagd names it; "mixed" when its variants disagree (the
    proxy refuses such a flag: the page still lists it)."""
    kinds = {_kind(v) for v in variants.values()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return VariantType.BOOLEAN.value
    if isinstance(value, str):
        return VariantType.STRING.value
    if isinstance(value, int | float):
        return VariantType.NUMBER.value
    return VariantType.OBJECT.value if isinstance(value, dict) else "invalid"


def rollout_label(raw: bytes, now: float) -> str:
    """A stored rollout as the flags list shows it; "" once it is done or aborted."""
    try:
        rollout = Rollout.from_json(raw)
    except ValueError:
        return "unreadable rollout record"
    if rollout.state not in ("running", "paused"):
        return ""
    at = now if rollout.state == "running" else (rollout.paused_at or now)
    step = rollout.step_at(at)
    if step < 0:
        return f"{rollout.state}: starts later"
    return (f"{rollout.state}: {rollout.steps[step]} % "
            f"(step {step + 1} of {len(rollout.steps)})")


def counts(rows: tuple[FlagRow, ...]) -> dict[str, int]:
    return {"flags": len(rows), "enabled": sum(r.state == "ENABLED" for r in rows),
            "disabled": sum(r.state == "DISABLED" for r in rows),
            "rollouts": sum(bool(r.rollout) for r in rows)}
