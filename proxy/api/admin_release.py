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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.admin_calls import AdminCalls, BadField, Caller, Json, field, requests_route
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
        base = "/v1/admin/envs/{env}"
        return [Route("/v1/admin/envs", self.envs, methods=["GET"]),
                Route(f"{base}/document", self.document, methods=["GET"]),
                Route(f"{base}/document", self.push, methods=["PUT"]),
                Route(f"{base}/preview", self.preview, methods=["POST"]),
                Route(f"{base}/history", self.history, methods=["GET"]),
                Route(f"{base}/rollback", self.rollback, methods=["POST"]),
                Route(f"{base}/policy", self.policy, methods=["GET"]),
                Route(f"{base}/policy", self.set_policy, methods=["PUT"])]

    async def envs(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        # Every key is bound to one environment: it sees that one (and no other's name).
        return await self.calls.run(caller, lambda client: {"envs": [
            e for e in publisher.list_envs(client) if e["env"] == caller.env]})

    async def document(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller

        def work(client: Any) -> Response:
            state = publisher.read_state(client, caller.env)
            if not state.exists:
                raise LookupError(f"environment {caller.env} does not exist")
            return Response(publisher.exported(state), media_type=errors.JSON_TYPE,
                            headers={"ETag": etag(state.version)})

        return await self.calls.run(caller, work)

    async def push(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body
        expect = if_match(request.headers.get("if-match"))
        if isinstance(expect, Response):
            return expect

        def work(client: Any) -> Response:
            new = parsed_document(body)
            message, glass = write_fields(body)
            state, plan = publisher.diff(client, caller.env, new)
            if expect is not None and state.version != expect:
                raise publisher.ConflictError(caller.env, expect, state.version)
            guard = direct_guard(client, caller, authz.WriteKind.CHANGE, glass, message)
            result = publisher.write(client, caller.env, plan, expect_version=expect,
                                     author=caller.actor.name, message=message, guard=guard)
            if result.status == "ok":
                self.calls.audit(caller, "push", version=result.version, marks=marks(guard))
            out = {"env": caller.env, "base_version": state.version, "diff": plan.to_json(),
                   "status": result.status, "version": result.version, "epoch": result.epoch,
                   "marks": sorted(guard)}
            return errors.json_response(out, headers={"ETag": etag(result.version)})

        return await self.calls.run(caller, work)

    async def preview(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body

        def work(client: Any) -> Json:
            state, plan = publisher.diff(client, caller.env, parsed_document(body))
            impact = review.preview(state, change_of(plan, state.document()))["impact"]
            return {"env": caller.env, "base_version": state.version, "diff": plan.to_json(),
                    "impact": impact, "dry_run": True}

        return await self.calls.run(caller, work)

    async def history(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        try:
            limit = int(request.query_params.get("limit", DEFAULT_HISTORY))
        except ValueError:
            return errors.parse_error("limit: expected an integer")
        if not 0 <= limit <= MAX_HISTORY:
            return errors.parse_error(f"limit: 0 (all kept, up to {MAX_HISTORY}) to "
                                      f"{MAX_HISTORY}")
        return await self.calls.run(caller, lambda client: [
            publisher.history_json(e)
            for e in publisher.history(client, caller.env, limit or MAX_HISTORY)])

    async def rollback(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body

        def work(client: Any) -> Response | Json:
            version = field(body, "version", int, required=True)
            message, glass = write_fields(body)
            message = message or f"rollback to version {version}"
            state, plan = publisher.rollback_plan(client, caller.env, version)
            out = {"env": caller.env, "from_version": state.version, "to": version,
                   "diff": plan.to_json()}
            if plan.empty:
                return {**out, "status": "noop", "version": state.version}
            guard = review.write_guard(client, caller.env, caller.actor, authz.WriteKind.KILL,
                                       break_glass=glass, reason=message,
                                       hint=f"use {requests_route(caller.env)}")
            if field(body, "propose", bool, False) or not isinstance(guard, dict):
                return proposed(self.calls, client, caller, state, plan, message, out)
            result = publisher.write(client, caller.env, plan, expect_version=state.version,
                                     author=caller.actor.name, message=message, op="replace",
                                     guard=guard)
            self.calls.audit(caller, "rollback", to=version, version=result.version,
                             marks=marks(guard))
            return {**out, "status": result.status, "version": result.version,
                    "marks": sorted(guard)}

        return await self.calls.run(caller, work)

    async def policy(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        return await self.calls.run(caller,
                                    lambda client: policy.read(client, caller.env).to_json())

    async def set_policy(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body

        def work(client: Any) -> Json:
            review.check(authz.may_manage(caller.actor))
            wanted = requested_policy(body)
            policy.write(client, caller.env, wanted)
            self.calls.audit(caller, "policy", approvals=wanted.approvals,
                             approvers=",".join(wanted.approvers) or None)
            return wanted.to_json()

        return await self.calls.run(caller, work)


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(header: str | None) -> int | Response | None:
    """``If-Match: "N"`` (the document's ETag; a bare N too) -> N; absent -> None."""
    if header is None:
        return None
    value = header.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if not value.isdigit():
        return errors.parse_error(f'If-Match: expected the document\'s ETag ("N", a version),'
                                  f" got {header!r}")
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
