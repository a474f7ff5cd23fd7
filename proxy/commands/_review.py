"""What the change-request commands share: the request as people read it, and its outcome."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from proxy.commands import _common as c

if TYPE_CHECKING:
    from proxy.release.requests import Request
    from proxy.release.review import Outcome


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int, metavar="N", help="request id (from requests list)")
    c.add_env_argument(parser)


def summary(request: Request) -> str:
    """One line: id, state, author, what it touches, the message."""
    from proxy.release.requests import plan_of

    plan = plan_of(request.change)
    touched = plan.touched + (["$evaluators"] if plan.evaluators else []) + (
        ["metadata"] if plan.metadata else [])
    names = ", ".join(touched[:5]) + (f" +{len(touched) - 5}" if len(touched) > 5 else "")
    return (f"{request.id:>5}  {request.state:9}  {request.author[:12]:12}  "
            f"{len(request.approvals):>3}  {names}"
            + (f'  "{request.message}"' if request.message else ""))


def details(request: Request, env: str, now: float) -> list[str]:
    """``requests show``: the request, its approvals and its latest preview."""
    from proxy.release.changeset import describe
    from proxy.release.requests import plan_of
    from proxy.release.times import iso

    state = request.state
    if state == "open" and request.expires_at <= now:
        state = "open (past its expiry: it expires when next touched)"
    lines = [f"request {request.id} in {env}: {state}",
             f"  author {request.author}, created {iso(request.created_at)}, expires "
             f"{iso(request.expires_at)}, base version {request.base_version}",
             f"  message: {request.message}" if request.message else "  message: -",
             f"  content {request.content_hash}"]
    if request.apply_at is not None:
        lines.append(f"  apply at {iso(request.apply_at)} (the release worker's job)")
    if request.applied_version is not None:
        lines.append(f"  applied as version {request.applied_version}")
    if request.reason:
        lines.append(f"  reason: {request.reason}")
    for a in request.approvals:
        lines.append(f"  approved by {a.by} at {iso(a.at)}"
                     + ("" if a.content_hash == request.content_hash else " (other content)"))
    lines.append("change:")
    lines += [f"  {line}" for line in describe(plan_of(request.change), env)]
    lines += preview_lines(request.preview)
    return lines


def preview_lines(preview: Any) -> list[str]:
    impact = preview.get("impact") or []
    if not impact:
        return []
    out = [f"rollout impact at version {preview.get('version')}:"]
    for i in impact:
        out.append(f"  {i['flag']}: {i['share']:.2%} of {i['contexts']} contexts change")
    return out


def report(outcome: Outcome, env: str, as_json: bool) -> int:
    """Print an approve's outcome; the exit code (0 recorded or applied; 3 no rule written
    because the request expired or conflicts)."""
    request = outcome.request
    if as_json:
        c.print_json({"status": outcome.status, "version": outcome.version,
                      "approvals": outcome.approvals, "needed": outcome.needed,
                      "reason": outcome.reason, "request": request.to_json()})
    elif outcome.status == "applied":
        print(f"request {request.id} applied: {env} version {outcome.version}")
    elif outcome.status == "pending":
        print(f"approved request {request.id}: {outcome.approvals} of {outcome.needed} "
              "approvals")
    elif outcome.status == "not_due":
        from proxy.release.times import iso

        print(f"approved request {request.id}: quorum met, due at "
              f"{iso(request.apply_at or 0)}; applying due requests is the release "
              "worker's job")
    else:
        c.err(f"request {request.id} {outcome.status}, nothing written: {outcome.reason}")
    return c.CONFLICT if outcome.status in ("conflict", "expired") else c.OK
