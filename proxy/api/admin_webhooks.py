"""Webhooks over the admin API (DESIGN §10; ``flagedge notify``): reading needs any role,
adding and removing ``manage``.

- ``GET /v1/admin/envs/{env}/webhooks``: the environment's webhooks (never their secrets);
- ``POST`` ``{url, format?: json|slack, secret?, allow_private?}``: 201 with the webhook and
  its signing secret, shown this once (a new ``whsec_`` secret unless one is given); a URL
  to private or loopback addresses is refused (422) unless ``allow_private``;
- ``DELETE .../webhooks/{id}``; ``GET .../webhooks/failed?limit=N``: deliveries given up.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.admin_calls import AdminCalls, Caller, Json, field
from proxy.release import review, webhooks
from proxy.release.authorization import may_manage

BASE = "/v1/admin/envs/{env}/webhooks"
MAX_FAILED = 1000


class WebhooksApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        return [Route(BASE, self.list, methods=["GET"]),
                Route(BASE, self.add, methods=["POST"]),
                Route(BASE + "/failed", self.failed, methods=["GET"]),
                Route(BASE + "/{id}", self.remove, methods=["DELETE"])]

    async def list(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        return await self.calls.run(caller, lambda client: [
            h.public_json() for h in webhooks.list_webhooks(client, caller.env)])

    async def failed(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        try:
            limit = int(request.query_params.get("limit", 100))
        except ValueError:
            return errors.parse_error("limit: expected an integer")
        if not 1 <= limit <= MAX_FAILED:
            return errors.parse_error(f"limit: 1 to {MAX_FAILED}")
        return await self.calls.run(caller,
                                    lambda client: webhooks.failed(client, caller.env, limit))

    async def add(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        body = await self.calls.body(request)
        if isinstance(body, Response):
            return body
        return await self.calls.run(caller, lambda client: self._add(client, caller, body),
                                    status=201)

    def _add(self, client: Any, caller: Caller, body: Json) -> Json:
        review.check(may_manage(caller.actor, "add webhooks"))
        hook = webhooks.add(client, caller.env, field(body, "url", str, required=True),
                            fmt=field(body, "format", str, "json"),
                            secret=field(body, "secret", str),
                            allow_private=field(body, "allow_private", bool, False),
                            created_by=caller.actor.name)
        # The URL may carry a token of the receiver's: the log names the webhook by id only.
        self.calls.audit(caller, "webhook added", id=hook.id, format=hook.format)
        return hook.to_json()

    async def remove(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        hook_id = request.path_params["id"]

        def work(client: Any) -> Json:
            review.check(may_manage(caller.actor, "remove webhooks"))
            webhooks.remove(client, caller.env, hook_id)
            self.calls.audit(caller, "webhook removed", id=hook_id)
            return {"id": hook_id, "removed": True}

        return await self.calls.run(caller, work)
