"""Change requests over the admin API (DESIGN §10; ``propose``, ``requests``, ``approve``,
``reject``, ``cancel``), as the calling key's name with its roles:

- ``GET /v1/admin/envs/{env}/requests?state=open|all|STATE`` (newest first), ``GET
  .../requests/{id}``: the §10 request object;
- ``POST .../requests`` ``{document | change, message, at?, expires?}`` (``propose``): a
  whole flagd document, or ``change``: one flag's one-line operation ``{flag, op, variant?,
  percent?}``; 201 with the request;
- ``POST .../requests/{id}/approve``: the approval, applied at once when it makes the quorum
  (``status`` applied | pending | not_due); 409 when the apply found a conflict or the
  request expired (nothing written);
- ``POST .../requests/{id}/reject`` ``{reason}`` (an approver's no), ``.../cancel``
  ``{reason?}`` (its author's, or a ``manage`` holder's, withdrawal).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.admin_calls import AdminCalls, BadField, Caller, Json, admin_error, field
from proxy.api.admin_flags import operation
from proxy.api.admin_release import parsed_document
from proxy.release import oneliners, publisher, review
from proxy.release.requests import DEFAULT_EXPIRY, STATES
from proxy.release.times import parse_duration, parse_time

BASE = "/v1/admin/envs/{env}/requests"


class RequestsApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        one = BASE + "/{id:int}"
        return [Route(BASE, self.list, methods=["GET"]),
                Route(BASE, self.create, methods=["POST"]),
                Route(one, self.one, methods=["GET"]),
                Route(one + "/approve", self.approve, methods=["POST"]),
                Route(one + "/reject", self.reject, methods=["POST"]),
                Route(one + "/cancel", self.cancel, methods=["POST"])]

    async def list(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        state = request.query_params.get("state", "open")
        if state != "all" and state not in STATES:
            return errors.parse_error(f"state: all or one of {', '.join(STATES)}")
        return await self.calls.run(caller, lambda client: [
            r.to_json() for r in review.list_requests(client, caller.env)
            if state in ("all", r.state)])

    async def one(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        request_id = request.path_params["id"]
        return await self.calls.run(
            caller, lambda client: review.get(client, caller.env, request_id)[1].to_json())

    async def create(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body
        return await self.calls.run(caller, lambda client: self._create(client, caller, body),
                                    status=201)

    def _create(self, client: Any, caller: Caller, body: Json) -> Json:
        message = field(body, "message", str, required=True)
        if not message.strip():
            raise BadField("message: say what and why (approvers read it)")
        expires = field(body, "expires", str)
        at = field(body, "at", str)
        apply_at = parse_time(at, review.redis_now(client, caller.env)) if at else None
        state, plan = proposal(client, caller.env, body)
        review.expire_due(client, caller.env)  # tidy: the release worker does this too
        created = review.propose_plan(client, caller.env, state, plan, actor=caller.actor,
                                      message=message, apply_at=apply_at,
                                      expires_in=parse_duration(expires) if expires
                                      else DEFAULT_EXPIRY)
        self.calls.audit(caller, "propose", request=created.id)
        return created.to_json()

    async def approve(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        request_id = request.path_params["id"]

        def work(client: Any) -> Json | Response:
            outcome = review.approve(client, caller.env, request_id, caller.actor)
            self.calls.audit(caller, "approve", request=request_id, outcome=outcome.status,
                             version=outcome.version)
            out = {"status": outcome.status, "version": outcome.version,
                   "approvals": outcome.approvals, "needed": outcome.needed,
                   "reason": outcome.reason, "request": outcome.request.to_json()}
            if outcome.status in ("conflict", "expired"):  # nothing written: say why
                return admin_error(409, outcome.status.upper(),
                                   f"request {request_id} {outcome.status}, nothing written: "
                                   f"{outcome.reason}", **out)
            return out

        return await self.calls.run(caller, work)

    async def reject(self, request: Request) -> Response:
        return await self._close(request, "reject")

    async def cancel(self, request: Request) -> Response:
        return await self._close(request, "cancel")

    async def _close(self, request: Request, how: str) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body
        request_id = request.path_params["id"]

        def work(client: Any) -> Json:
            reason = field(body, "reason", str, "", required=how == "reject")
            if how == "reject":
                if not reason.strip():
                    raise BadField("reason: say why it is rejected")
                closed = review.reject(client, caller.env, request_id, caller.actor, reason)
            else:
                closed = review.cancel(client, caller.env, request_id, caller.actor, reason)
            self.calls.audit(caller, how, request=request_id)
            return closed.to_json()

        return await self.calls.run(caller, work)


def proposal(client: Any, env: str, body: Json) -> tuple[publisher.RemoteState, Any]:
    """The stored state and the plan a new request proposes: ``document`` (a whole flagd
    document) or ``change`` (one flag's one-line operation), exactly one of them."""
    if ("document" in body) == ("change" in body):
        raise BadField("document or change: exactly one of them")
    if "document" in body:
        return publisher.diff(client, env, parsed_document(body))
    change = field(body, "change", dict, required=True)
    key = field(change, "flag", str, required=True)
    state = publisher.read_state(client, env)
    plan, _edit = oneliners.plan_edit(state, key, operation(change))
    return state, plan
