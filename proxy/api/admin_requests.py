"""Change requests over the admin API (DESIGN §10; ``propose``, ``requests``, ``approve``,
``reject``, ``cancel``), as the calling key's name with its roles:

- ``GET /v1/admin/envs/{env}/requests?state=open|all|STATE`` (newest first), ``GET
  .../requests/{id}``: the §10 request object;
- ``POST .../requests`` ``{document | change, message, at?, expires?, base_version?}``
  (``propose``): a whole flagd document, or ``change``: one flag's one-line operation
  ``{flag, op, variant?, percent?}``; 201 with the request; 409 ``CONFLICT`` when
  ``base_version`` (the version the caller edited) is no longer the live one;
- ``POST .../requests/{id}/approve``: the approval, applied at once when it makes the quorum
  (``status`` applied | pending | not_due); 409 when the apply found a conflict or the
  request expired (nothing written);
- ``POST .../requests/{id}/reject`` ``{reason}`` (an approver's no), ``.../cancel``
  ``{reason?}`` (its author's, or a ``manage`` holder's, withdrawal).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from proxy.api.admin_calls import AdminCalls, BadField, Call, Json, admin_error, field
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
        one, route = BASE + "/{id:int}", self.calls.route
        return [route(BASE, self.list, "GET"),
                route(BASE, self.create, "POST", body=True, status=201),
                route(one, self.one, "GET"),
                route(one + "/approve", self.approve, "POST"),
                route(one + "/reject", self.reject, "POST", body=True),
                route(one + "/cancel", self.cancel, "POST", body=True)]

    def list(self, client: Any, call: Call) -> list[Json]:
        state = call.request.query_params.get("state", "open")
        if state != "all" and state not in STATES:
            raise BadField(f"state: all or one of {', '.join(STATES)}")
        return [r.to_json() for r in review.list_requests(client, call.env)
                if state in ("all", r.state)]

    def one(self, client: Any, call: Call) -> Json:
        return review.get(client, call.env, call.param("id"))[1].to_json()

    def create(self, client: Any, call: Call) -> Json:
        message = field(call.body, "message", str, required=True)
        if not message.strip():
            raise BadField("message: say what and why (approvers read it)")
        expires = field(call.body, "expires", str)
        at = field(call.body, "at", str)
        apply_at = parse_time(at, review.redis_now(client, call.env)) if at else None
        expected = field(call.body, "base_version", int)
        state, plan = proposal(client, call.env, call.body)
        if expected is not None and expected != state.version:
            # the caller edited an older version: this diff, against the newer one, would
            # undo the write in between
            raise publisher.ConflictError(call.env, expected, state.version)
        review.expire_due(client, call.env)  # tidy: the release worker does this too
        created = review.propose_plan(client, call.env, state, plan, actor=call.actor,
                                      message=message, apply_at=apply_at,
                                      expires_in=parse_duration(expires) if expires
                                      else DEFAULT_EXPIRY)
        self.calls.audit(call, "propose", request=created.id)
        return created.to_json()

    def approve(self, client: Any, call: Call) -> Json | Response:
        request_id = call.param("id")
        outcome = review.approve(client, call.env, request_id, call.actor)
        self.calls.audit(call, "approve", request=request_id, outcome=outcome.status,
                         version=outcome.version)
        out = {"status": outcome.status, "version": outcome.version,
               "approvals": outcome.approvals, "needed": outcome.needed,
               "reason": outcome.reason, "request": outcome.request.to_json()}
        if outcome.status in ("conflict", "expired"):  # nothing written: say why
            return admin_error(409, outcome.status.upper(),
                               f"request {request_id} {outcome.status}, nothing written: "
                               f"{outcome.reason}", **out)
        return out

    def reject(self, client: Any, call: Call) -> Json:
        reason = field(call.body, "reason", str, required=True)
        if not reason.strip():
            raise BadField("reason: say why it is rejected")
        closed = review.reject(client, call.env, call.param("id"), call.actor, reason)
        self.calls.audit(call, "reject", request=closed.id)
        return closed.to_json()

    def cancel(self, client: Any, call: Call) -> Json:
        reason = field(call.body, "reason", str, "")
        closed = review.cancel(client, call.env, call.param("id"), call.actor, reason)
        self.calls.audit(call, "cancel", request=closed.id)
        return closed.to_json()


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
