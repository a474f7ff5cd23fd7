"""Progressive rollouts against Redis (DESIGN §10): start, status, pause, abort, and the
release worker's cleanup after the last step. The rules themselves (pure) are
``rollout_rules.py``; the record and the rule are written by one script
(``storage/rollouts.py``), or, for a start in a protected environment, by the apply script
of the change request it becomes (the record travels in the request's ``change``, so it is
approved with the rule).

Each function takes a Redis client, the environment and an :class:`~authorization.Actor`,
so the CLI and (later) the admin API call the same code: a start is a change (a request
where the environment is protected), a pause or an abort a kill operation (applied at once
by a ``kill`` holder, marked ``kill``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.release import authorization as authz
from proxy.release import publisher, review
from proxy.release.changeset import Document, make_plan
from proxy.release.requests import Request
from proxy.release.rollout_rules import (
    Rollout,
    RolloutError,
    aborted,
    finished,
    frozen,
    is_ramping,
    plan,
    started,
)
from proxy.release.times import iso
from proxy.storage import policy
from proxy.storage import rollouts as stored
from proxy.storage.replies import text
from proxy.storage.requests import guarded_write_args

TRIES = 5  # re-read and redo when another write landed between our read and our write

# (the flag as stored, its rollout record or None, Redis' time) -> (new flag, new record,
# summary for the change log)
Change = Callable[[dict[str, Any], Rollout | None, float],
                  tuple[dict[str, Any], Rollout, str]]


@dataclass(frozen=True, slots=True)
class Written:
    """What a rollout write did: ``ok`` (written as ``version``, with ``marks``),
    ``proposed`` (the change request it became) or ``noop``."""

    status: str
    env: str
    flag: str
    summary: str
    rollout: Rollout
    version: int | None = None
    request: Request | None = None
    marks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "env": self.env, "flag": self.flag,
                "operation": self.summary, "version": self.version,
                "request": self.request.to_json() if self.request else None,
                "marks": list(self.marks), "rollout": self.rollout.to_json()}


def start(client: Any, env: str, key: str, *, variant: str, steps: tuple[int, ...],
          every: float, actor: authz.Actor, start_at: float | None = None,
          message: str = "", break_glass: bool = False) -> Written:
    """Start rolling ``variant`` out over ``steps`` (percent), one every ``every`` seconds
    from ``start_at`` (default: now by Redis' clock). Refused (RolloutError) while the flag
    is in a running rollout whose ramp it still has."""
    def change(flag: dict[str, Any], current: Rollout | None, now: float
               ) -> tuple[dict[str, Any], Rollout, str]:
        if current is not None and current.state == "running" and is_ramping(flag, current):
            raise RolloutError(f"flag {key} is already in a running rollout (of "
                               f"{current.variant}, started {iso(current.start)}): pause or "
                               "abort it first")
        # "now" is rounded down so the first step is in force at once; a given start is
        # rounded up (plan) so no step begins before the time asked for
        new = plan(key, flag, variant=variant, steps=steps, every=every,
                   start=math.floor(now) if start_at is None else start_at,
                   author=actor.name)
        return started(flag, new), new, (f"rollout of {variant}: "
                                         f"{','.join(map(str, steps))}% every {new.every}s "
                                         f"from {iso(new.start)}")
    return _write(client, env, key, change, actor, authz.WriteKind.CHANGE, message,
                  break_glass)


def pause(client: Any, env: str, key: str, *, actor: authz.Actor,
          message: str = "") -> Written:
    """Freeze the running rollout at its current step (a kill operation)."""
    def change(flag: dict[str, Any], current: Rollout | None, now: float
               ) -> tuple[dict[str, Any], Rollout, str]:
        current = _expect(key, current, ("running",))
        percent = current.percent_at(now)
        return (frozen(flag, current, percent), current.replace(state="paused", paused_at=now),
                f"rollout of {current.variant} paused at {percent or 0}%")
    return _write(client, env, key, change, actor, authz.WriteKind.KILL, message)


def abort(client: Any, env: str, key: str, *, actor: authz.Actor,
          message: str = "") -> Written:
    """Put the previous targeting back (a kill operation), running or paused."""
    def change(flag: dict[str, Any], current: Rollout | None, _now: float
               ) -> tuple[dict[str, Any], Rollout, str]:
        current = _expect(key, current, ("running", "paused"))
        return (aborted(flag, current), current.replace(state="aborted"),
                f"rollout of {current.variant} aborted: previous targeting restored")
    return _write(client, env, key, change, actor, authz.WriteKind.KILL, message)


def _expect(key: str, current: Rollout | None, states: tuple[str, ...]) -> Rollout:
    if current is None:
        raise LookupError(f"flag {key} has no rollout")
    if current.state not in states:
        raise RolloutError(f"flag {key}'s rollout is {current.state}, not "
                           f"{' or '.join(states)}")
    return current


def _write(client: Any, env: str, key: str, change: Change, actor: authz.Actor,
           kind: authz.WriteKind, message: str, break_glass: bool = False) -> Written:
    for _ in range(TRIES):
        state, flag = _flag(client, env, key)
        raw = stored.read(client, env, key)
        current = Rollout.from_json(raw) if raw is not None else None
        new_flag, record, summary = change(flag, current, review.redis_now(client, env))
        plan_ = make_plan(state.document(), _edited(state, key, new_flag))
        decision = authz.write_route(actor, policy.read(client, env), kind,
                                     break_glass=break_glass, reason=message)
        if decision.route is authz.Route.REQUEST or decision.reason == authz.APPROVAL_REQUIRED:
            return _propose(client, env, key, state, plan_, record, actor, message or summary,
                            summary)
        review.check(decision)
        guard = {decision.mark.value: "1"} if decision.mark else {}
        args = guarded_write_args(guard, bool(guard)) + publisher.write_args(
            plan_, expect_version=state.version, author=actor.name, message=message or summary)
        reply = stored.call_write(client, env, key, raw, record.head(), args)
        if text(reply[0]) == "moved":
            continue  # another rollout write landed first: decide again on what it left
        try:
            result = publisher.write_result(client, env, plan_, reply, state.version)
        except publisher.ApprovalRequired:  # protected a moment ago: the request instead
            return _propose(client, env, key, state, plan_, record, actor, message or summary,
                            summary)
        except publisher.ConflictError:
            continue
        return Written(result.status, env, key, summary, record.replace(version=result.version),
                       version=result.version, marks=tuple(sorted(guard)))
    raise RuntimeError(f"flag {key} in {env} kept changing under us; try again")


def _flag(client: Any, env: str, key: str) -> tuple[publisher.RemoteState, dict[str, Any]]:
    state = publisher.read_state(client, env)
    if not state.exists:
        raise LookupError(f"environment {env} does not exist in Redis")
    flag = state.document().flags.get(key)
    if flag is None:
        raise LookupError(f"flag {key} is not in environment {env} (version {state.version}): "
                          "add it with flagedge push")
    return state, flag


def _edited(state: publisher.RemoteState, key: str, flag: dict[str, Any]) -> Document:
    """The environment with ``flag`` as ``key``, checked as a push would check it (with the
    evaluators it may reference, not the other flags: one broken elsewhere must not block an
    abort here)."""
    current = state.document()
    publisher.parse_document(orjson.dumps({"flags": {key: flag},
                                           "$evaluators": dict(current.evaluators)}),
                             source=f"flag {key}")
    return Document({**current.flags, key: flag}, current.evaluators, current.metadata)


def _propose(client: Any, env: str, key: str, state: publisher.RemoteState, plan_: Any,
             record: Rollout, actor: authz.Actor, message: str, summary: str) -> Written:
    request = review.propose_plan(client, env, state, plan_, actor=actor, message=message,
                                  rollouts={key: record.to_json()})
    return Written("proposed", env, key, summary, record, request=request)


def status(client: Any, env: str, key: str, actor: authz.Actor | None = None,
           now: float | None = None) -> dict[str, Any]:
    """The rollout of ``key`` as ``rollout --status --json`` prints it: its record, the
    step in force (1-based; 0 before start or once aborted) and its percentage, the next
    boundary (ISO), and whether the flag still has the ramp (``ramping``). Raises
    LookupError; Refused when ``actor`` (if given) may not view."""
    if actor is not None:
        review.check(authz.may_view(actor))
    raw = stored.read(client, env, key)
    if raw is None:
        raise LookupError(f"flag {key} has no rollout in environment {env}")
    rollout = Rollout.from_json(raw)
    now = review.redis_now(client, env) if now is None else now
    at = {"running": now, "paused": rollout.paused_at}.get(rollout.state)
    step = (len(rollout.steps) - 1 if rollout.state == "done"
            else rollout.step_at(at) if at is not None else -1)
    nxt = step + 1 if rollout.state == "running" and step + 1 < len(rollout.steps) else None
    flag = publisher.read_state(client, env).document().flags.get(key)
    return {"env": env, "flag": key, **rollout.to_json(), "start_iso": iso(rollout.start),
            "step": step + 1, "percent": rollout.steps[step] if step >= 0 else 0,
            "next_boundary": iso(rollout.boundary(nxt)) if nxt is not None else None,
            "ends": iso(rollout.end), "ramping": is_ramping(flag, rollout)}


SCHEDULER = review.SCHEDULER  # the cleanup's change entry: applied_by, on behalf of the author


@dataclass(frozen=True, slots=True)
class Finished:
    """A cleanup the worker tried: ``done`` (written as ``version``), ``detached`` (the flag
    no longer has the ramp: someone replaced it; nothing written), ``raced`` (another write
    came first; the next tick decides again)."""

    flag: str
    status: str
    version: int | None = None


def finish_due(client: Any, env: str) -> list[Finished]:
    """Write the static rule of every running rollout past its last boundary and mark it
    ``done``. Fenced by the record's compare-and-set and the version: with several workers,
    one writes, the others find the record moved."""
    running = {}
    for key, raw in sorted(stored.read_all(client, env).items()):
        try:
            rollout = Rollout.from_json(raw)
        except ValueError:
            continue  # not ours
        if rollout.state == "running":
            running[key] = (raw, rollout)
    if not running:
        return []  # one HGETALL per tick where nothing runs
    now = review.redis_now(client, env)
    return [_finish(client, env, key, raw, rollout)
            for key, (raw, rollout) in running.items() if now >= rollout.end]


def _finish(client: Any, env: str, key: str, raw: bytes, rollout: Rollout) -> Finished:
    try:
        state, flag = _flag(client, env, key)
    except LookupError:
        return Finished(key, "detached")
    if not is_ramping(flag, rollout):
        return Finished(key, "detached")
    new_flag = finished(flag, rollout)
    plan_ = make_plan(state.document(), _edited(state, key, new_flag))
    summary = f"rollout of {rollout.variant} done: {rollout.steps[-1]}%"
    args = guarded_write_args({"applied_by": SCHEDULER}, True) + publisher.write_args(
        plan_, expect_version=state.version, author=rollout.author, message=summary)
    reply = stored.call_write(client, env, key, raw, rollout.replace(state="done").head(), args)
    if text(reply[0]) in ("moved", "conflict"):
        return Finished(key, "raced")
    result = publisher.write_result(client, env, plan_, reply, state.version)
    if result.status != "ok":
        return Finished(key, "raced")  # the rule already holds: not this worker's write
    return Finished(key, "done", result.version)

