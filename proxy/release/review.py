"""Change requests against Redis (DESIGN §10): propose, approve (applying at quorum),
reject, cancel, expire, list. Each state change is one script in the environment's slot
(``storage/requests.py``); authorization is ``release/authorization.py``'s.

Concurrency: every script compares the stored request with the one this code read and
refuses (``moved``) when someone else changed it first; the operation then reads again and
decides again (a second approver finds the first one's approval, or the request applied).
The apply script is the fence: two approvers reaching quorum at once write one version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.model import canonical
from proxy.release import authorization as authz
from proxy.release import publisher
from proxy.release.changeset import Document, Plan, make_plan
from proxy.release.preview import rollout_impact, synthetic_contexts
from proxy.release.requests import (
    DEFAULT_EXPIRY,
    Approval,
    Request,
    applied_to,
    change_of,
    content_hash,
    plan_of,
    referenced_evaluators,
)
from proxy.release.times import iso
from proxy.storage import layout, policy
from proxy.storage import requests as stored
from proxy.storage.replies import text

MAX_TRIES = 50  # compare-and-set rounds before giving up (each lost one means progress)


class Refused(Exception):
    """Authorization said no (exit 10); the reason says why."""


class NotOpen(Exception):
    """The request is no longer open (exit 3): applied, rejected, cancelled, expired or in
    conflict, possibly by someone else a moment ago."""

    def __init__(self, request: Request):
        self.request = request
        why = f": {request.reason}" if request.reason else ""
        super().__init__(f"request {request.id} is {request.state}{why}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an approve (or apply) did: ``applied`` (version), ``pending`` (approvals of
    needed), ``conflict`` / ``expired`` (no rule written), ``not_due`` (apply_at later)."""

    status: str
    request: Request
    version: int | None = None
    approvals: int = 0
    needed: int = 0
    reason: str = ""


def redis_now(client: Any, env: str) -> float:
    """Redis' clock (the apply script decides expiry by it: so do we)."""
    return stored.redis_time(client, env)


def check(decision: authz.Decision) -> None:
    if not decision:
        raise Refused(decision.reason)


def write_guard(client: Any, env: str, actor: authz.Actor,
                kind: authz.WriteKind = authz.WriteKind.CHANGE, *, break_glass: bool = False,
                reason: str = "", hint: str = "use flagedge propose",
                ) -> dict[str, str] | authz.Decision:
    """How ``actor``'s write to ``env`` passes release control, by the policy as it is now:
    the ``guard`` for ``publisher.write`` (``{}`` or the change entry's mark), or the
    Decision when the write must become a request instead. Raises ApprovalRequired (``hint``
    says where to propose: the CLI and the admin API name their own way) or Refused."""
    current = policy.read(client, env)
    decision = authz.write_route(actor, current, kind, break_glass=break_glass, reason=reason)
    if decision.route is authz.Route.REQUEST:
        return decision
    if not decision:
        if decision.reason == authz.APPROVAL_REQUIRED:
            raise publisher.ApprovalRequired(env, current.approvals, hint)
        raise Refused(decision.reason)
    return {decision.mark.value: "1"} if decision.mark else {}


def get(client: Any, env: str, request_id: int) -> tuple[bytes, Request]:
    raw = stored.read_raw(client, env, request_id)
    if raw is None:
        raise LookupError(f"no request {request_id} in environment {env}")
    return raw, Request.from_json(raw)


def list_requests(client: Any, env: str) -> list[Request]:
    """Newest first; a stored value that is not a request is skipped."""
    out = []
    for raw in stored.read_all_raw(client, env).values():
        try:
            out.append(Request.from_json(raw))
        except ValueError:
            continue
    return sorted(out, key=lambda r: -r.id)


def preview(state: publisher.RemoteState, change: dict[str, Any]) -> dict[str, Any]:
    """What the change does on top of ``state`` (the diff and the rollout impact, as
    ``push --dry-run`` prints them), recomputed at approval and at apply."""
    current = state.document()
    new = applied_to(current, change)
    plan = make_plan(current, new)
    impact = rollout_impact(current, new, plan, synthetic_contexts(),
                            fractional_hash=state.fractional_hash) if not plan.empty else []
    return {"version": state.version, "diff": plan.to_json(),
            "impact": [i.to_json() for i in impact]}


def propose_plan(client: Any, env: str, state: publisher.RemoteState, plan: Plan, *,
                 actor: authz.Actor, message: str, expires_in: float = DEFAULT_EXPIRY,
                 apply_at: float | None = None,
                 rollouts: Mapping[str, Any] | None = None) -> Request:
    """Store a new open request for ``plan`` (computed against ``state``); returns it with
    its id. An empty plan is refused (ValueError): there is nothing to approve.
    ``rollouts`` (flag -> rollout record, release/rollout.py): stored in the change, so
    approved with it, and written by the apply script with the rule."""
    check(authz.may_propose(actor))
    if plan.empty:
        raise ValueError(f"nothing to propose: environment {env} already has these rules")
    now = redis_now(client, env)
    change = change_of(plan, state.document())
    if rollouts:
        change["rollouts"] = dict(rollouts)
    request = Request(
        id=0, state="open", base_version=state.version, author=actor.name, message=message,
        created_at=now, expires_at=round(now + expires_in, 3), change=change,
        content_hash=content_hash(env, state.version, change), preview=preview(state, change),
        apply_at=apply_at)
    request_id = stored.call_create(client, env, request.body_without_id(), actor.name,
                                    apply_at)
    return request.replace(id=request_id)


def propose(client: Any, env: str, new: Document, **kwargs: Any) -> Request:
    state, plan = publisher.diff(client, env, new)
    return propose_plan(client, env, state, plan, **kwargs)


def apply_args(raw: bytes, request: Request, approved: Request | None,
               at_apply: dict[str, Any], marks: Mapping[str, str] | None = None) -> list[Any]:
    """APPLY_LUA's ARGV (see its comment): candidates for each outcome (the applied one with
    the preview ``at_apply``), what must not have moved since base_version, the change
    entry's extra ``marks`` (the release worker's ``applied_by``), then the write itself."""
    basis = (approved or request).replace(preview=at_apply)
    change = request.change
    before, reads = change["before"], change.get("reads") or {}
    args: list[Any] = [
        str(request.id), raw, approved.dumps() if approved else "",
        basis.replace(state="applied").head(), basis.replace(state="conflict").head(),
        request.replace(state="expired", reason=f"expired at {iso(request.expires_at)}").dumps(),
        str(len(before["flags"]))]
    for key, flag in sorted(before["flags"].items()):
        args += [key, "" if flag is None else canonical(flag)]
    args.append(canonical(before["$evaluators"]) if "$evaluators" in before else "")
    base_evaluators = reads.get("$evaluators") or {}
    names = referenced_evaluators(change, base_evaluators)
    args += [str(len(names)), *names, canonical(base_evaluators)]
    args += [canonical(reads.get("metadata") or {}), str(len(marks or {}))]
    for field, value in (marks or {}).items():
        args += [field, value]
    rollouts = change.get("rollouts") or {}  # started by this request (release/rollout.py)
    args.append(str(len(rollouts)))
    for key, record in sorted(rollouts.items()):
        args += [key, orjson.dumps(record)[:-1]]
    return args + publisher.write_args(plan_of(change), author=request.author,
                                       message=request.message)


def approve(client: Any, env: str, request_id: int, actor: authz.Actor) -> Outcome:
    """Record ``actor``'s approval and apply the request if that makes the quorum (the
    policy as it is now); approving again (a crash between, a quorum met by a policy change)
    only tries to apply."""
    for _ in range(MAX_TRIES):
        raw, request = get(client, env, request_id)
        if request.state != "open":
            raise NotOpen(request)
        check(authz.may_approve(actor, request.author, policy.read(client, env)))
        now = preview(publisher.read_state(client, env), dict(request.change))
        approved = None
        if actor.name not in request.approved_by:
            approval = Approval(actor.name, redis_now(client, env), request.content_hash)
            approved = request.replace(approvals=(*request.approvals, approval), preview=now)
        reply = stored.call_apply(client, env, apply_args(raw, request, approved, now))
        outcome = _outcome(client, env, request_id, reply)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"request {request_id} kept changing under us; try again")


SCHEDULER = "scheduler"  # the change entry's applied_by when the release worker applied it


def apply_scheduled(client: Any, env: str, request_id: int) -> Outcome | None:
    """The release worker's try at a due request: apply it if the approvals (by the policy
    as it is now) make the quorum. None: nothing to do now (no quorum yet: an approval
    applies it, being past due). The apply script decides due-ness, quorum and conflicts
    itself, so several workers racing here write it once. The change entry keeps the
    request's author and approvers and adds ``applied_by: scheduler``."""
    for _ in range(MAX_TRIES):
        raw, request = get(client, env, request_id)
        if request.state != "open":
            raise NotOpen(request)
        rules = policy.read(client, env)
        # The apply script's rule: N approvals, at least one for a proposal, none for a
        # change scheduled where N is 0 (checked again there, with the policy of that moment).
        needed = rules.approvals if request.apply_at is not None else max(1, rules.approvals)
        if (request.expires_at > redis_now(client, env)
                and len(request.valid_approvers(rules.approvers)) < needed):
            return None  # no quorum, not expired: skip the preview and the script
        now = preview(publisher.read_state(client, env), dict(request.change))
        reply = stored.call_apply(client, env, apply_args(raw, request, None, now,
                                                          {"applied_by": SCHEDULER}))
        outcome = _outcome(client, env, request_id, reply)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"request {request_id} kept changing under us; try again")


def _outcome(client: Any, env: str, request_id: int, reply: list[Any]) -> Outcome | None:
    """APPLY_LUA's reply as an Outcome; None: it moved, read again."""
    status = text(reply[0])
    if status == "moved":
        return None
    if status == "missing":
        raise LookupError(f"no request {request_id} in environment {env}")
    _raw, request = get(client, env, request_id)
    if status == "closed":
        raise NotOpen(request)
    if status == "applied":
        publisher.register_env(client, env)
        return Outcome("applied", request, version=int(reply[1]))
    if status == "pending":
        return Outcome("pending", request, approvals=int(reply[1]), needed=int(reply[2]))
    if status == "conflict":
        return Outcome("conflict", request, reason=text(reply[1]))
    return Outcome(status, request, reason=request.reason or "")


def _close(client: Any, env: str, request_id: int, state: str, reason: str,
           decide: Any, by: str) -> Request:
    """Move an open request to ``state`` (rejected, cancelled) after ``decide(request)``
    allowed it; returns the request as stored."""
    for _ in range(MAX_TRIES):
        raw, request = get(client, env, request_id)
        if request.state != "open":
            raise NotOpen(request)
        check(decide(request))
        closed = request.replace(state=state, reason=reason)
        reply = stored.call_transition(client, env, request_id, raw, closed.dumps(),
                                       by=by)
        status = text(reply[0])
        if status == "ok":
            return closed
        if status == "closed":
            raise NotOpen(get(client, env, request_id)[1])
    raise RuntimeError(f"request {request_id} kept changing under us; try again")


def reject(client: Any, env: str, request_id: int, actor: authz.Actor, why: str) -> Request:
    if not why.strip():
        raise ValueError("reject needs a reason: -m WHY")
    return _close(client, env, request_id, "rejected", f"rejected by {actor.name}: {why}",
                  lambda r: authz.may_reject(actor, r.author), actor.name)


def cancel(client: Any, env: str, request_id: int, actor: authz.Actor,
           reason: str = "") -> Request:
    return _close(client, env, request_id, "cancelled", reason or f"cancelled by {actor.name}",
                  lambda r: authz.may_cancel(actor, r.author), actor.name)


def supersede(client: Any, env: str, old_id: int, new: Request, actor: authz.Actor) -> Request:
    """Requests are immutable: an edit is a new request (``new``, already stored) that
    cancels the one it replaces, whose approvals do not carry over."""
    return cancel(client, env, old_id, actor, f"superseded by request {new.id}")


def expire_due(client: Any, env: str) -> list[int]:
    """Flip every open request past its expiry (by Redis' clock) to ``expired``; returns
    their ids. Each flip is checked again by the script, so a request approved or applied
    meanwhile stays as it is."""
    now, done = redis_now(client, env), []
    layout.check_env(env)
    for request_id, raw in stored.read_all_raw(client, env).items():
        try:
            request = Request.from_json(raw)
        except ValueError:
            continue
        if request.state == "open" and request.expires_at <= now:
            expired = request.replace(state="expired",
                                      reason=f"expired at {iso(request.expires_at)}")
            reply = stored.call_transition(client, env, request_id, raw, expired.dumps(),
                                           expire=True)
            if text(reply[0]) == "ok":
                done.append(request_id)
    return sorted(done)
