"""API keys over the admin API (``flagedge keys``), all ``manage``, all of the calling key's
own environment (a key never sees or touches another environment's keys):

- ``GET /v1/admin/keys``: ids, kinds, names, roles (never secrets, never hashes);
- ``POST`` ``{kind, name, roles?, rate_limit?}``: 201 with the new key in ``key``, shown
  this once (Redis keeps only its hash);
- ``DELETE /v1/admin/keys/{id}``: revoked on every proxy (announced on ``flagedge:events``)
  and, in this process, at once.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.admin_calls import AdminCalls, BadField, Caller, Json, field
from proxy.keys import KINDS, ROLES, KeyRecord, parse_roles
from proxy.release import review
from proxy.release.authorization import may_manage
from proxy.storage import keys as stored_keys

BASE = "/v1/admin/keys"


class KeysApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        return [Route(BASE, self.list, methods=["GET"]),
                Route(BASE, self.create, methods=["POST"]),
                Route(BASE + "/{id}", self.revoke, methods=["DELETE"])]

    async def list(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller

        def work(client: Any) -> list[Json]:
            review.check(may_manage(caller.actor, "list keys"))
            rows = stored_keys.list_keys(client, caller.env).values()
            return [public(r) for r in sorted(rows, key=lambda r: (r.kind, r.name, r.id))]

        return await self.calls.run(caller, work)

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
        review.check(may_manage(caller.actor, "create keys"))
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
            client, caller.env, kind, name.strip(), float(rate) if rate is not None else None,
            roles=parse_roles(",".join(roles)) if roles is not None else None)
        self.calls.audit(caller, "key created", id=record.id, kind=kind)
        return {"key": api_key, **public(record)}

    async def revoke(self, request: Request) -> Response:
        caller = self.calls.caller(request)
        if isinstance(caller, Response):
            return caller
        key_id = request.path_params["id"]

        def work(client: Any) -> Json:
            review.check(may_manage(caller.actor, "revoke keys"))
            # Only this environment's keys, by their exact id (no prefix guessing).
            found = [h for h, r in stored_keys.list_keys(client, caller.env).items()
                     if r.id == key_id]
            if not found:
                raise LookupError(f"no key with id {key_id!r} in environment {caller.env}")
            record = stored_keys.revoke(client, found[0])
            self.calls.audit(caller, "key revoked", id=record.id)
            return public(record)

        response = await self.calls.run(caller, work)
        if response.status_code == 200:
            self._forget(key_id)
        return response

    def _forget(self, key_id: str) -> None:
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
