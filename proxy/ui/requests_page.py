"""The requests inbox and one request's page (DESIGN §10, §12), on the admin API's own handlers
(``proxy.api.admin_requests.RequestsApi``, ``proxy.api.admin_release.ReleaseApi``) run as the
signed-in key through ``UiRoutes.act``:

- ``GET /ui/requests``: open requests first (newest first), then the recent closed ones: who
  proposed what, its state, approvals (who, and how many the policy needs), created, apply
  time and expiry, every time in UTC with its offset written out (never the browser's zone);
- ``GET /ui/requests/{id}``: the request: its change against its base version and what it
  would change against live now, the impact recomputed now (the preview handler on the
  request's document), approvals with names, a conflict explained in words (what moved since
  its base version: the apply script writes nothing then), and the actions;
- ``POST /ui/requests/{id}/approve|reject|cancel``: the handlers of those routes (reject
  needs a reason). A control the key may not use is disabled with the reason
  ``release.authorization`` gives; the server refuses a forged POST anyway (the handler's
  403), and the page shows every refusal and every outcome in words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api.admin_release import ReleaseApi
from proxy.api.admin_requests import RequestsApi
from proxy.model import canonical
from proxy.release import authorization as authz
from proxy.release.changeset import Document, Plan, flag_changes, make_plan
from proxy.release.requests import Request, applied_to, plan_of, referenced_evaluators
from proxy.release.times import iso
from proxy.storage.policy import Policy
from proxy.ui.routes import Outcome, SignedIn, UiRoutes

RECENT_CLOSED = 30  # closed requests the inbox lists under the open ones
MAX_REASON = 500


# -- what the pages show (pure) -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DiffRow:
    """One changed thing, as people read it: a flag added / changed / removed (with what
    changed inside it), or the shared ``$evaluators`` / ``metadata``."""

    kind: str  # added | changed | removed | evaluators | metadata
    key: str
    lines: tuple[str, ...] = ()

    @property
    def sign(self) -> str:
        return {"added": "+", "removed": "-"}.get(self.kind, "~")


def diff_rows(plan: Plan) -> tuple[DiffRow, ...]:
    rows = [DiffRow("added", key, (_added_line(flag),)) for key, flag in sorted(
        plan.added.items())]
    rows += [DiffRow("changed", key, tuple(flag_changes(old, new)))
             for key, (old, new) in sorted(plan.changed.items())]
    rows += [DiffRow("removed", key) for key in sorted(plan.removed)]
    if plan.evaluators:
        old, new = plan.evaluators
        rows.append(DiffRow("evaluators", "$evaluators", tuple(
            f"evaluator {name} changed" for name in sorted({*old, *new})
            if not _same(old.get(name), new.get(name)))))
    if plan.metadata:
        rows.append(DiffRow("metadata", "metadata", ("the environment's metadata changes",)))
    return tuple(rows)


def _added_line(flag: Any) -> str:
    flag = flag if isinstance(flag, Mapping) else {}
    variants = flag.get("variants") if isinstance(flag.get("variants"), Mapping) else {}
    return (f"{flag.get('state')}, default {flag.get('defaultVariant')}, variants "
            f"{', '.join(sorted(variants))}")


def moved_since_base(request: Request, live: Document) -> list[str]:
    """What the request touches or reads that is no longer as it was at its base version,
    named as the apply script names it (``flag K``, ``$evaluators``, ``$evaluators.NAME``,
    ``metadata``): any of them and the apply writes nothing (conflict)."""
    change = request.change
    before, reads = change["before"], change.get("reads") or {}
    moved = [f"flag {key}" for key, flag in sorted(before.get("flags", {}).items())
             if not _same(flag, live.flags.get(key))]
    if "$evaluators" in before and not _same(before["$evaluators"], dict(live.evaluators)):
        moved.append("$evaluators")
    base_evaluators = reads.get("$evaluators") or {}
    for name in referenced_evaluators(change, base_evaluators):
        if not _same(base_evaluators.get(name), live.evaluators.get(name)):
            moved.append(f"$evaluators.{name}")
    if not _same(reads.get("metadata") or {}, dict(live.metadata)):
        moved.append("metadata")
    return moved


def _same(a: Any, b: Any) -> bool:
    return canonical(a) == canonical(b)


@dataclass(frozen=True, slots=True)
class Conflict:
    applies: bool  # False: approving it now writes nothing
    text: str


def conflict_of(request: Request, live: Document, live_version: int | None) -> Conflict:
    """The request's base against live, in words (for an open request)."""
    base = request.base_version
    if live_version is None:
        return Conflict(True, "The live version is unknown (Redis not read).")
    if live_version == base:
        return Conflict(True, f"Proposed against version {base}, which is still live: it "
                              "applies exactly as proposed.")
    moved = moved_since_base(request, live)
    if not moved:
        return Conflict(True, f"Proposed against version {base}; live is now version "
                              f"{live_version}. The changes since did not touch what this "
                              "request changes or reads: it still applies as proposed.")
    return Conflict(False, f"Proposed against version {base}; live is now version "
                           f"{live_version}, and since then {', '.join(moved)} changed. "
                           "Approving it writes nothing: the apply finds the conflict and "
                           "closes the request. Propose the change again against the live "
                           "rules.")


def needed_approvals(request: Request, policy: Policy) -> int:
    """How many approvals apply it, as the apply script counts (a proposal needs one even
    where the environment is not protected; a scheduled change where N is 0 needs none)."""
    return policy.approvals if request.apply_at is not None else max(1, policy.approvals)


@dataclass(frozen=True, slots=True)
class Control:
    """An action button: enabled, or disabled with the reason shown next to it."""

    name: str  # approve | reject | cancel (also the id of its reason text)
    allowed: bool
    reason: str = ""


def controls(actor: authz.Actor, request: Request, policy: Policy | None,
             read_only: str = "") -> tuple[Control, ...]:
    """The request's actions for this key: ``release.authorization`` decides (the handler
    decides the same again on POST). ``read_only``: why nothing can be written now."""
    if read_only or policy is None:
        why = read_only or "The policy could not be read: read-only."
        return tuple(Control(n, False, why) for n in ("approve", "reject", "cancel"))
    decisions = {
        "approve": authz.may_approve(actor, request.author, policy, request.approved_by),
        "reject": authz.may_reject(actor, request.author),
        "cancel": authz.may_cancel(actor, request.author),
    }
    return tuple(Control(name, bool(d), d.reason) for name, d in decisions.items())


def inbox_order(requests: Sequence[Request], closed: int = RECENT_CLOSED) -> list[Request]:
    """Open requests (newest first), then the ``closed`` most recent others."""
    open_ = sorted((r for r in requests if r.state == "open"), key=lambda r: -r.id)
    rest = sorted((r for r in requests if r.state != "open"), key=lambda r: -r.id)
    return open_ + rest[:closed]


def approve_message(data: Mapping[str, Any]) -> str:
    """The approve handler's answer (200) in words."""
    status = data.get("status")
    if status == "applied":
        return f"Approved and applied: the environment is now at version {data.get('version')}."
    if status == "pending":
        return (f"Approved: {data.get('approvals')} of {data.get('needed')} approvals; it "
                "applies when the rest approve.")
    if status == "not_due":
        apply_at = (data.get("request") or {}).get("apply_at")
        at = f" at {iso(apply_at)} (UTC)" if apply_at else ""
        return (f"Approved: the approvals are complete; the release worker applies it{at}.")
    return f"Approved ({status})."


def utc(ts: float | None) -> str:
    """A stored time as the pages print it: ISO 8601 in UTC with its offset spelled out,
    the same for every reader wherever their browser is."""
    return "never" if ts is None else f"{iso(ts)} (UTC, +00:00)"


# -- the routes -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Flash:
    """An action's result for the page: a success (``role=status``) or a refusal (``alert``)."""

    ok: bool
    text: str


class RequestsPages:
    def __init__(self, ui: UiRoutes):
        self.ui = ui
        self.requests = RequestsApi(ui.calls)
        self.release = ReleaseApi(ui.calls)
        ui.templates.filters["utc"] = utc

    def routes(self) -> list[BaseRoute]:
        one = "/ui/requests/{id:int}"
        return [Route("/ui/requests", self.inbox, methods=["GET"]),
                Route(one, self.detail, methods=["GET"]),
                Route(one + "/approve", self.approve, methods=["POST"]),
                Route(one + "/reject", self.reject, methods=["POST"]),
                Route(one + "/cancel", self.cancel, methods=["POST"])]

    async def inbox(self, request: HttpRequest) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        listed = await self.ui.act(who, self.requests.list, query="state=all")
        rows = inbox_order(_requests(listed)) if listed.ok else []
        return self.ui.render("requests.html", nav="requests", who=who, view=view,
                               rows=rows, error="" if listed.ok else listed.error,
                               open_requests=sum(r.state == "open" for r in rows),
                               policy=view.policy,
                               needed_of=lambda r: needed_approvals(r, view.policy))

    async def detail(self, request: HttpRequest) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        return await self._detail(who, request.path_params["id"])

    async def approve(self, request: HttpRequest) -> Response:
        return await self._action(request, "approve")

    async def reject(self, request: HttpRequest) -> Response:
        return await self._action(request, "reject")

    async def cancel(self, request: HttpRequest) -> Response:
        return await self._action(request, "cancel")

    async def _action(self, request: HttpRequest, name: str) -> Response:
        posted = await self.ui.posted(request)
        if isinstance(posted, Response):
            return posted
        who, form = posted
        request_id = request.path_params["id"]
        params = {"id": request_id}
        if name == "approve":
            done = await self.ui.act(who, self.requests.approve, params=params)
            text = approve_message(done.data) if done.ok else done.error
        else:
            handler = self.requests.reject if name == "reject" else self.requests.cancel
            reason = form.get("reason", "").strip()[:MAX_REASON]
            done = await self.ui.act(who, handler, params=params, body={"reason": reason})
            text = (f"Request {request_id} {'rejected' if name == 'reject' else 'cancelled'}."
                    if done.ok else done.error)
        return await self._detail(who, request_id, Flash(done.ok, text),
                                  status=200 if done.ok else done.status)

    async def _detail(self, who: SignedIn, request_id: int, flash: Flash | None = None,
                      status: int = 200) -> Response:
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        got = await self.ui.act(who, self.requests.one, params={"id": request_id})
        if not got.ok:
            return self.ui.render("request.html", got.status if got.status != 200 else 404,
                                   nav="requests", who=who, view=view, req=None,
                                   request_id=request_id, error=got.error, flash=flash)
        req = Request.from_json(got.data)
        live_doc = await self.ui.act(who, self.release.document)
        live = Document.from_json(live_doc.data) if live_doc.ok else None
        context: dict[str, Any] = {
            "req": req, "base_diff": diff_rows(plan_of(req.change)), "live_diff": None,
            "impact": None, "impact_error": "", "conflict": None,
        }
        if live is not None and req.state == "open":
            proposed = applied_to(live, req.change)
            context["live_diff"] = diff_rows(make_plan(live, proposed))
            context["conflict"] = conflict_of(req, live, view.version)
            impact = await self._impact(who, proposed)
            context["impact"] = impact.data.get("impact", []) if impact.ok else None
            context["impact_error"] = "" if impact.ok else impact.error
        policy = view.policy
        read_only = view.problem if view.read_only else ""
        return self.ui.render(
            "request.html", status, nav="requests", who=who, view=view, flash=flash,
            request_id=request_id, error="", policy=policy,
            needed=needed_approvals(req, policy) if policy else None,
            counted=req.valid_approvers(policy.approvers if policy else ()),
            controls={c.name: c for c in controls(who.actor, req, policy, read_only)},
            live_error="" if live_doc.ok else live_doc.error, **context)

    async def _impact(self, who: SignedIn, proposed: Document) -> Outcome:
        """The preview handler (``POST .../preview``) on the document the request makes."""
        return await self.ui.act(who, self.release.preview,
                                 body={"document": proposed.to_json()})


def _requests(listed: Outcome) -> list[Request]:
    out = []
    for item in listed.data or []:
        try:
            out.append(Request.from_json(item))
        except ValueError:
            continue
    return out
