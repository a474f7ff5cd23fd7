"""The environment's history timeline and rollback (DESIGN §10, §12), on the admin API's own
handlers (``ReleaseApi.history`` and ``.rollback``, ``RequestsApi.list``) run as the signed-in
key through ``UiRoutes.act``:

- ``GET /ui/history``: newest first, every version written (who, when in UTC, message, the
  flags it touched, its marks: kill, break-glass, the request it applied and its approvers,
  the scheduler) interleaved with the steps of the change requests (proposed by, approved
  by, rejected / cancelled / expired / in conflict, with the reason), so a change reads as
  propose -> approve -> apply with names. Each version's diff loads when it is opened
  (``GET /ui/history/{version}/diff``, htmx);
- ``GET /ui/history?rollback=N``: what rolling back to version N changes, and how it would
  reach the environment for this key (applied at once; marked ``kill`` where the
  environment is protected; or a change request needing approval; or refused, and why);
- ``POST /ui/history/rollback`` ``version, message``: the rollback handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api.admin_release import ReleaseApi
from proxy.api.admin_requests import RequestsApi
from proxy.model import InvalidDocument
from proxy.release import authorization as authz
from proxy.release import publisher
from proxy.release.requests import Request, plan_of
from proxy.storage.layout import LayoutTooNew
from proxy.storage.policy import Policy
from proxy.ui.requests_page import DiffRow, Flash, diff_rows
from proxy.ui.routes import SignedIn, UiRoutes

SHOWN_VERSIONS = 50  # versions the timeline lists (the change log keeps more)
MAX_MESSAGE = 500
# Steps at one moment, in the order they happen: proposed, approved, the version written,
# then a request's closing.
_ORDER = {"proposed": 0, "approved": 1, "version": 2}


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline: a version written (``kind`` "version", with ``entry``, the
    history handler's JSON) or a request's step (proposed / approved / rejected / ...)."""

    kind: str
    at: float | None  # None: the store keeps no time for it (a rejection, a cancel)
    who: str
    text: str
    request: int | None = None
    entry: Mapping[str, Any] | None = None
    timed: bool = True  # False: ``at`` only places it (no time is stored for it)

    @property
    def version(self) -> int | None:
        return None if self.entry is None else self.entry.get("version")


def marks(entry: Mapping[str, Any]) -> list[str]:
    """How a version got past release control, in words (``publisher.release_marks``'s)."""
    out = []
    if entry.get("applied_by"):
        out.append(f"applied by the {entry['applied_by']} on behalf of {entry.get('author')}")
    if entry.get("kill"):
        out.append("kill (applied at once in a protected environment)")
    if entry.get("break_glass"):
        out.append("break-glass")
    if entry.get("request") is not None:
        approvers = entry.get("approvers") or []
        out.append(f"request #{entry['request']}" + (
            f", approved by {', '.join(approvers)}" if approvers else ""))
    return out


def request_steps(request: Request) -> list[Step]:
    """A request's proposal, its approvals, and how it closed unless it applied (the applied
    version is the change log's own step)."""
    rid = request.id
    steps = [Step("proposed", request.created_at, request.author,
                  f"proposed request #{rid}: {request.message or '(no message)'}", rid)]
    steps += [Step("approved", a.at, a.by, f"approved request #{rid}", rid)
              for a in request.approvals]
    if request.state == "expired":
        steps.append(Step("expired", request.expires_at, "", f"request #{rid} expired", rid))
    elif request.state in ("rejected", "cancelled", "conflict"):
        # No time is stored for these: listed just after the request's last known step.
        last = max([request.created_at, *(a.at for a in request.approvals)])
        steps.append(Step(request.state, last, "", f"request #{rid} {request.state}: "
                          f"{request.reason or 'no reason given'}", rid, timed=False))
    return steps


def timeline(entries: Sequence[Mapping[str, Any]], requests: Sequence[Request]) -> list[Step]:
    """Versions and request steps, newest first; request steps only from the time the
    listed versions reach back to (older ones would sit among versions not shown)."""
    steps = [Step("version", float(e.get("at") or 0), str(e.get("author") or ""),
                  str(e.get("message") or ""), e.get("request"), e) for e in entries]
    oldest = min((s.at for s in steps if s.at), default=0.0)
    for request in requests:
        steps += [s for s in request_steps(request) if (s.at or 0) >= oldest]
    return sorted(steps, key=lambda s: (s.at or 0, _ORDER.get(s.kind, 3)), reverse=True)


@dataclass(frozen=True, slots=True)
class RollbackHow:
    """How a rollback by this key would reach the environment."""

    allowed: bool
    text: str  # what happens, or why not


def rollback_how(actor: authz.Actor, policy: Policy | None, read_only: str = "") -> RollbackHow:
    """``release.authorization.write_route`` for a kill operation, in words (the rollback
    handler decides the same again on POST)."""
    if read_only:
        return RollbackHow(False, read_only)
    if policy is None:
        return RollbackHow(False, "The policy could not be read: read-only.")
    decision = authz.write_route(actor, policy, authz.WriteKind.KILL)
    if decision.route is authz.Route.REQUEST:
        n = policy.approvals
        return RollbackHow(True, f"The environment is protected: your rollback becomes a "
                                 f"change request that needs {n} approval{'s' * (n != 1)} "
                                 "before it applies.")
    if not decision:
        return RollbackHow(False, decision.reason)
    if decision.mark is authz.Mark.KILL:
        return RollbackHow(True, "Applied at once as a kill operation (you hold the kill "
                                 "role): the new version is marked kill in the history.")
    return RollbackHow(True, "Applied at once: the environment is not protected.")


def rollback_message(data: Mapping[str, Any], status: int) -> str:
    """The rollback handler's answer in words."""
    to = data.get("to")
    if status == 202 or data.get("status") == "proposed":
        request = data.get("request") or {}
        return (f"Rollback to version {to} proposed as request #{request.get('id')}: it "
                "applies once approved.")
    if data.get("status") == "noop":
        return f"Nothing to roll back: version {data.get('version')} already has these rules."
    marked = " (marked kill)" if "kill" in (data.get("marks") or []) else ""
    return f"Rolled back to version {to}: the environment is now at version " \
           f"{data.get('version')}{marked}."


class HistoryPages:
    def __init__(self, ui: UiRoutes):
        self.ui = ui
        self.release = ReleaseApi(ui.calls)
        self.requests = RequestsApi(ui.calls)
        ui.templates.filters["history_marks"] = marks

    def routes(self) -> list[BaseRoute]:
        return [Route("/ui/history", self.page, methods=["GET"]),
                Route("/ui/history/{version:int}/diff", self.diff, methods=["GET"]),
                Route("/ui/history/rollback", self.rollback, methods=["POST"])]

    async def page(self, request: HttpRequest) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        wanted = request.query_params.get("rollback", "")
        return await self._page(who, int(wanted) if wanted.isdigit() else None)

    async def rollback(self, request: HttpRequest) -> Response:
        posted = await self.ui.posted(request)
        if isinstance(posted, Response):
            return posted
        who, form = posted
        version = form.get("version", "")
        if not version.isdigit():
            return await self._page(who, None, Flash(False, "Which version? The form sent "
                                                     "none."), status=400)
        body = {"version": int(version), "message": form.get("message", "").strip()[
            :MAX_MESSAGE]}
        done = await self.ui.act(who, self.release.rollback, body=body)
        text = rollback_message(done.data, done.status) if done.ok else done.error
        return await self._page(who, None if done.ok else int(version), Flash(done.ok, text),
                                status=200 if done.ok else done.status)

    async def diff(self, request: HttpRequest) -> Response:
        """One version's diff (the change entry's before and after), for the timeline."""
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        version = request.path_params["version"]
        rows, error = await asyncio.to_thread(self._version_diff, who.session.env, version)
        return self.ui.render("history_diff.html", rows=rows, error=error, version=version)

    def _version_diff(self, env: str, version: int) -> tuple[tuple[DiffRow, ...], str]:
        if self.ui.settings.flags is not None:
            return (), "This proxy serves a rules file: it keeps no history."
        try:
            records = publisher.history(self.ui.redis(), env)
        except (RedisError, OSError, LayoutTooNew) as exc:
            return (), f"History unreadable now ({type(exc).__name__})."
        record = next((r for r in records if r.version == version), None)
        if record is None:
            return (), f"The change log no longer holds version {version}."
        if not record.readable:
            return (), "This entry's before/after is unreadable (bad JSON stored by another tool)."
        return diff_rows(plan_of({"before": record.before, "after": record.after})), ""

    async def _page(self, who: SignedIn, rollback_to: int | None, flash: Flash | None = None,
                    status: int = 200) -> Response:
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        listed = await self.ui.act(who, self.release.history, query=f"limit={SHOWN_VERSIONS}")
        reqs = await self.ui.act(who, self.requests.list, query="state=all")
        requests = [Request.from_json(r) for r in (reqs.data or [])] if reqs.ok else []
        steps = timeline(listed.data or [], requests) if listed.ok else []
        how = rollback_how(who.actor, view.policy, view.problem if view.read_only else "")
        confirm = None
        if rollback_to is not None and how.allowed:
            confirm = await asyncio.to_thread(self._rollback_preview, who.session.env,
                                              rollback_to)
        return self.ui.render(
            "history.html", status, nav="history", who=who, view=view, steps=steps,
            error="" if listed.ok else listed.error, how=how, flash=flash,
            rollback_to=rollback_to, confirm=confirm,
            open_requests=sum(r.state == "open" for r in requests),
            current=view.version)

    def _rollback_preview(self, env: str, version: int) -> tuple[tuple[DiffRow, ...], str]:
        """What rolling back to ``version`` changes now (``publisher.rollback_plan``, as the
        handler computes it), or why it cannot."""
        try:
            _state, plan = publisher.rollback_plan(self.ui.redis(), env, version)
        except LookupError as exc:  # beyond the change log, or no such version
            return (), str(exc.args[0]) if exc.args else str(exc)
        except InvalidDocument as exc:
            return (), f"Version {version}'s rules do not validate today: {exc}"
        except (RedisError, OSError, LayoutTooNew) as exc:
            return (), f"History unreadable now ({type(exc).__name__})."
        return diff_rows(plan), ""
