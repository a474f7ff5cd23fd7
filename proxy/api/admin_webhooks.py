"""Webhooks over the admin API (DESIGN §10; ``flagedge notify``): reading needs any role,
adding and removing ``manage``.

- ``GET /v1/admin/envs/{env}/webhooks``: the environment's webhooks (never their secrets);
- ``POST`` ``{url, format?: json|slack, secret?, allow_private?}``: 201 with the webhook and
  its signing secret, shown this once (a new ``whsec_`` secret unless one is given); a URL
  to private or loopback addresses is refused (422) unless ``allow_private``;
- ``DELETE .../webhooks/{id}``; ``GET .../webhooks/failed?limit=N``: deliveries given up;
- ``POST .../webhooks/{id}/test`` (``manage``): a signed test message sent now; 200 with
  ``{webhook, delivered, status, error, ms}`` whatever the receiver answered (nothing is
  retried or stored).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from proxy.api.admin_calls import AdminCalls, Call, Json, field
from proxy.release import review, webhook_test, webhooks
from proxy.release.authorization import may_manage

BASE = "/v1/admin/envs/{env}/webhooks"
MAX_FAILED = 1000


class WebhooksApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        route = self.calls.route
        return [route(BASE, self.list, "GET"),
                route(BASE, self.add, "POST", body=True, status=201),
                route(BASE + "/failed", self.failed, "GET"),
                route(BASE + "/{id}", self.remove, "DELETE"),
                route(BASE + "/{id}/test", self.test, "POST")]

    def list(self, client: Any, call: Call) -> list[Json]:
        return [h.public_json() for h in webhooks.list_webhooks(client, call.env)]

    def failed(self, client: Any, call: Call) -> list[dict[str, str]]:
        return webhooks.failed(client, call.env, call.int_query("limit", 100, 1, MAX_FAILED))

    def add(self, client: Any, call: Call) -> Json:
        review.check(may_manage(call.actor, "add webhooks"))
        body = call.body
        hook = webhooks.add(client, call.env, field(body, "url", str, required=True),
                            fmt=field(body, "format", str, "json"),
                            secret=field(body, "secret", str),
                            allow_private=field(body, "allow_private", bool, False),
                            created_by=call.actor.name)
        # The URL may carry a token of the receiver's: the log names the webhook by id only.
        self.calls.audit(call, "webhook added", id=hook.id, format=hook.format)
        return hook.to_json()

    def remove(self, client: Any, call: Call) -> Json:
        review.check(may_manage(call.actor, "remove webhooks"))
        hook_id = call.param("id")
        webhooks.remove(client, call.env, hook_id)
        self.calls.audit(call, "webhook removed", id=hook_id)
        return {"id": hook_id, "removed": True}

    def test(self, client: Any, call: Call) -> Json:
        review.check(may_manage(call.actor, "send test deliveries"))
        hook_id = call.param("id")
        sent = webhook_test.send_test(client, call.env, hook_id, call.actor.name)
        self.calls.audit(call, "webhook test delivery", id=hook_id, delivered=sent.delivered,
                         status=sent.status)
        return sent.to_json()
