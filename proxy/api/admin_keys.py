"""API keys over the admin API (``flagedge keys``), all ``manage``, all of the calling key's
own environment (a key never sees or touches another environment's keys):

- ``GET /v1/admin/keys``: ids, kinds, names, roles (never secrets, never hashes);
- ``POST`` ``{kind, name, roles?, rate_limit?}``: 201 with the new key in ``key``, shown
  this once (Redis keeps only its hash);
- ``DELETE /v1/admin/keys/{id}``: revoked on every proxy (announced on ``flagedge:events``)
  and, in this process, at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.admin_calls import AdminCalls, BadField, Call, Json, field
from proxy.keys import KINDS, ROLES, KeyRecord, parse_roles
from proxy.release import review
from proxy.release.authorization import may_manage
from proxy.storage import keys as stored_keys

BASE = "/v1/admin/keys"


class KeysApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        route = self.calls.route
        revoke = route(BASE + "/{id}", self.revoke, "DELETE")
        return [route(BASE, self.list, "GET"),
                route(BASE, self.create, "POST", body=True, status=201),
                Route(revoke.path, self._forgetting(revoke.endpoint), methods=["DELETE"])]

    def list(self, client: Any, call: Call) -> list[Json]:
        review.check(may_manage(call.actor, "list keys"))
        rows = stored_keys.list_keys(client, call.env).values()
        return [public(r) for r in sorted(rows, key=lambda r: (r.kind, r.name, r.id))]

    def create(self, client: Any, call: Call) -> Json:
        review.check(may_manage(call.actor, "create keys"))
        body = call.body
        kind = field(body, "kind", str, required=True)
        if kind not in KINDS:
            raise BadField(f"kind: one of {', '.join(KINDS)}, not {kind!r}")
        name = field(body, "name", str, required=True)
        if not name.strip():
            raise BadField("name: who or what uses the key")
        roles = field(body, "roles", list)
        if roles is not None and not all(isinstance(r, str) for r in roles):
            raise BadField(f"roles: a list of role names ({', '.join(ROLES)})")
        rate = field(body, "rate_limit", (int, float))
        if rate is not None and rate <= 0:
            raise ValueError("rate_limit: a positive number of requests per second")
        api_key, record = stored_keys.create(
            client, call.env, kind, name.strip(), float(rate) if rate is not None else None,
            roles=parse_roles(",".join(roles)) if roles is not None else None)
        self.calls.audit(call, "key created", id=record.id, kind=kind)
        return {"key": api_key, **public(record)}

    def revoke(self, client: Any, call: Call) -> Json:
        review.check(may_manage(call.actor, "revoke keys"))
        key_id = call.param("id")
        # Only this environment's keys, by their exact id (no prefix guessing).
        found = [h for h, r in stored_keys.list_keys(client, call.env).items()
                 if r.id == key_id]
        if not found:
            raise LookupError(f"no key with id {key_id!r} in environment {call.env}")
        record = stored_keys.revoke(client, found[0])
        self.calls.audit(call, "key revoked", id=record.id)
        return public(record)

    def _forgetting(self, endpoint: Callable[[Request], Awaitable[Response]]
                    ) -> Callable[[Request], Awaitable[Response]]:
        """After a revoke, on the event loop (the key ring's subscribers close streams)."""
        async def revoke(request: Request) -> Response:
            response = await endpoint(request)
            if response.status_code == 200:
                self.forget(request.path_params["id"])
            return response

        return revoke

    def forget(self, key_id: str) -> None:
        """This process stops taking the key now; the others when the announcement reaches
        them (their key rings follow ``flagedge:events``)."""
        ring = self.calls.keyring
        for key_hash, record in ring.records().items():
            if record.id == key_id:
                ring.remove(key_hash)


def public(record: KeyRecord) -> Json:
    """A key as listed: id, kind, name, roles held (in ROLES order), never its hash."""
    return {"id": record.id, **record.to_json(),
            "roles": [role for role in ROLES if role in record.effective_roles]}
