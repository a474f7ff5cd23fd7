"""The admin API's environment routes (DESIGN §10), each a thin call into ``proxy.release`` as
the CLI makes it, as the calling key's name with its roles:

- ``GET /v1/admin/envs``: the key's environment: version, flags, policy (``envs list``);
- ``GET /v1/admin/envs/{env}/document``: the flagd document (``export``), ``ETag`` its
  version; ``PUT`` ``{document, message?, break_glass?}`` pushes it (``push``): 409
  ``APPROVAL_REQUIRED`` in a protected environment (nothing written), ``If-Match: "N"``
  -> 409 ``CONFLICT`` unless the environment is at version N;
- ``POST /v1/admin/envs/{env}/preview`` ``{document}``: the diff and the rollout impact over
  synthetic targeting keys, nothing written (``push --dry-run``);
- ``GET /v1/admin/envs/{env}/history?limit=N`` (``history``);
- ``POST /v1/admin/envs/{env}/rollback`` ``{version, message?, break_glass?, propose?}``: a
  kill operation (``rollback``): applied by a ``kill`` holder (marked ``kill`` where
  protected), else the change request it would apply (202);
- ``GET|PUT /v1/admin/envs/{env}/policy`` ``{approvals, approvers?}`` (``envs
  protect|unprotect``; ``manage``).

Progressive rollouts (``/rollouts``) are another module's.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.admin_calls import (
    AdminCalls,
    BadField,
    Call,
    Caller,
    Json,
    field,
    requests_route,
)
from proxy.model import canonical
from proxy.release import authorization as authz
from proxy.release import publisher, review
from proxy.release.changeset import Document, Plan
from proxy.release.requests import change_of
from proxy.storage import policy

DEFAULT_HISTORY = 20
MAX_HISTORY = 1000


class ReleaseApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        base, route = "/v1/admin/envs/{env}", self.calls.route
        return [route("/v1/admin/envs", self.envs, "GET"),
                route(f"{base}/document", self.document, "GET"),
                route(f"{base}/document", self.push, "PUT", body=True),
                route(f"{base}/preview", self.preview, "POST", body=True),
                route(f"{base}/history", self.history, "GET"),
                route(f"{base}/rollback", self.rollback, "POST", body=True),
                route(f"{base}/policy", self.policy, "GET"),
                route(f"{base}/policy", self.set_policy, "PUT", body=True)]

    def envs(self, client: Any, call: Call) -> Json:
        # Every key is bound to one environment: it sees that one (and no other's name).
        return {"envs": [e for e in publisher.list_envs(client) if e["env"] == call.env]}

    def document(self, client: Any, call: Call) -> Response:
        state = publisher.read_state(client, call.env)
        if not state.exists:
            raise LookupError(f"environment {call.env} does not exist")
        return Response(publisher.exported(state), media_type=errors.JSON_TYPE,
                        headers={"ETag": etag(state.version)})

    def push(self, client: Any, call: Call) -> Response:
        expect = if_match(call.request.headers.get("if-match"))
        new = parsed_document(call.body)
        message, glass = write_fields(call.body)
        state, plan = publisher.diff(client, call.env, new)
        if expect is not None and state.version != expect:
            raise publisher.ConflictError(call.env, expect, state.version)
        guard = direct_guard(client, call, authz.WriteKind.CHANGE, glass, message)
        result = publisher.write(client, call.env, plan, expect_version=expect,
                                 author=call.actor.name, message=message, guard=guard)
        if result.status == "ok":
            self.calls.audit(call, "push", version=result.version, marks=marks(guard))
        out = {"env": call.env, "base_version": state.version, "diff": plan.to_json(),
               "status": result.status, "version": result.version, "epoch": result.epoch,
               "marks": sorted(guard)}
        return errors.json_response(out, headers={"ETag": etag(result.version)})

    def preview(self, client: Any, call: Call) -> Json:
        state, plan = publisher.diff(client, call.env, parsed_document(call.body))
        impact = review.preview(state, change_of(plan, state.document()))["impact"]
        return {"env": call.env, "base_version": state.version, "diff": plan.to_json(),
                "impact": impact, "dry_run": True}

    def history(self, client: Any, call: Call) -> list[Json]:
        limit = call.int_query("limit", DEFAULT_HISTORY, 0, MAX_HISTORY)  # 0: all kept
        return [publisher.history_json(e)
                for e in publisher.history(client, call.env, limit or MAX_HISTORY)]

    def rollback(self, client: Any, call: Call) -> Response | Json:
        version = field(call.body, "version", int, required=True)
        message, glass = write_fields(call.body)
        message = message or f"rollback to version {version}"
        state, plan = publisher.rollback_plan(client, call.env, version)
        out = {"env": call.env, "from_version": state.version, "to": version,
               "diff": plan.to_json()}
        if plan.empty:
            return {**out, "status": "noop", "version": state.version}
        guard = review.write_guard(client, call.env, call.actor, authz.WriteKind.KILL,
                                   break_glass=glass, reason=message,
                                   hint=f"use {requests_route(call.env)}")
        if field(call.body, "propose", bool, False) or not isinstance(guard, dict):
            return proposed(self.calls, client, call, state, plan, message, out)
        result = publisher.write(client, call.env, plan, expect_version=state.version,
                                 author=call.actor.name, message=message, op="replace",
                                 guard=guard)
        self.calls.audit(call, "rollback", to=version, version=result.version,
                         marks=marks(guard))
        return {**out, "status": result.status, "version": result.version,
                "marks": sorted(guard)}

    def policy(self, client: Any, call: Call) -> Json:
        return policy.read(client, call.env).to_json()

    def set_policy(self, client: Any, call: Call) -> Json:
        review.check(authz.may_manage(call.actor))
        wanted = requested_policy(call.body)
        policy.write(client, call.env, wanted)
        self.calls.audit(call, "policy", approvals=wanted.approvals,
                         approvers=",".join(wanted.approvers) or None)
        return wanted.to_json()


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(header: str | None) -> int | None:
    """``If-Match: "N"`` (the document's ETag; a bare N too) -> N; absent -> None; anything
    else BadField (400)."""
    if header is None:
        return None
    value = header.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if not value.isdigit():
        raise BadField(f'If-Match: expected the document\'s ETag ("N", a version), got '
                       f"{header!r}")
    return int(value)


def parsed_document(body: Json) -> Document:
    """``body.document``, validated as a push validates a file (InvalidDocument: 422 with
    every problem's path, prefixed ``document``)."""
    document = field(body, "document", dict, required=True)
    return publisher.parse_document(canonical(document), source="document")


def write_fields(body: Json) -> tuple[str, bool]:
    """A write's ``message`` and ``break_glass`` (break-glass needs a message: release/
    says so)."""
    return field(body, "message", str, ""), field(body, "break_glass", bool, False)


def direct_guard(client: Any, caller: Caller, kind: authz.WriteKind, glass: bool,
                 message: str) -> dict[str, str]:
    """The guard of a write that applies at once or not at all (a push): a protected
    environment refuses it (409, naming the route that proposes it instead)."""
    hint = f"use {requests_route(caller.env)}"
    guard = review.write_guard(client, caller.env, caller.actor, kind, break_glass=glass,
                               reason=message, hint=hint)
    if not isinstance(guard, dict):  # routed to a request: not for a push
        raise publisher.ApprovalRequired(caller.env, policy.read(client, caller.env).approvals,
                                         hint)
    return guard


def marks(guard: dict[str, str]) -> str | None:
    return ",".join(sorted(guard)) or None


def proposed(calls: AdminCalls, client: Any, caller: Caller, state: publisher.RemoteState,
             plan: Plan, message: str, out: Json) -> Response:
    """The change request a write becomes where it needs approval: 202 with the request."""
    request = review.propose_plan(client, caller.env, state, plan, actor=caller.actor,
                                  message=message)
    calls.audit(caller, "propose", request=request.id)
    return errors.json_response({**out, "status": "proposed", "request": request.to_json()},
                                202)


def requested_policy(body: Json) -> policy.Policy:
    """``{approvals, approvers?}`` -> Policy; approvals 0 unprotects. Raises BadField for a
    wrong type, ValueError (422) for a policy that can never be met."""
    approvals = field(body, "approvals", int, required=True)
    approvers = field(body, "approvers", list, [])
    if approvals < 0:
        raise ValueError("approvals: 0 (not protected) or more")
    if not all(isinstance(name, str) and name.strip() for name in approvers):
        raise BadField("approvers: expected a list of names")
    names = tuple(sorted({name.strip() for name in approvers}))
    if approvals == 0:
        if names:
            raise ValueError("approvers: an unprotected environment (approvals 0) has none")
        return policy.Policy()
    if names and len(names) < approvals:
        raise ValueError(f"approvals {approvals} can never be met by {len(names)} approver(s)")
    return policy.Policy(approvals, names)
