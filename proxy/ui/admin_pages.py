"""The UI's administration pages (DESIGN §10, §12), every read and write through the admin
API's own handlers as the signed-in key (``UiRoutes.act``: the route's authorization, errors
and audit line):

- ``GET /ui/webhooks``: the environment's webhooks and the deliveries given up
  (``WebhooksApi.list``, ``.failed``); ``POST /ui/webhooks`` adds one (``.add``: its signing
  secret is shown in that answer only); ``POST /ui/webhooks/{id}/remove`` (``.remove``);
  ``POST /ui/webhooks/{id}/test`` sends it a signed test message now (``.test``) and shows
  what the receiver answered;
- ``GET /ui/keys``: the environment's keys with their roles (``KeysApi.list``);
  ``POST /ui/keys`` creates one (``.create``): the new key appears in that POST's answer page
  only (htmx swaps it into the page, so a reload GETs the list without it), never in a URL,
  a log or any later page; ``POST /ui/keys/{id}/revoke`` (``.revoke``, then this process
  forgets the key at once, as the admin route's ``_forgetting`` wrapper does).

Both need ``manage`` to write (``may_manage``): without it, or read-only, the controls are
disabled with the reason, and a forged POST is refused by the handler (403).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api.admin_keys import KeysApi
from proxy.api.admin_webhooks import WebhooksApi
from proxy.keys import KINDS, ROLES
from proxy.release.authorization import Decision, may_manage
from proxy.release.webhooks import FORMATS

if TYPE_CHECKING:
    from proxy.ui.routes import Outcome, SignedIn, UiRoutes

FAILED_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Shown:
    """A write's Outcome as its answer page shows it, and that page's HTTP status: the
    handler's own, except for htmx's requests (htmx swaps only 2xx answers in; the refusal
    is in the page, ``role="alert"``, either way)."""

    outcome: Outcome
    page_status: int

    @property
    def ok(self) -> bool:
        return self.outcome.ok


def _shown(request: Request, done: Outcome) -> Shown:
    htmx = request.headers.get("hx-request") == "true"
    return Shown(done, 200 if htmx else done.status)


class AdminPages:
    def __init__(self, ui: UiRoutes):
        self.ui = ui
        self.webhooks = WebhooksApi(ui.calls)
        self.keys = KeysApi(ui.calls)

    def routes(self) -> list[BaseRoute]:
        return [Route("/ui/webhooks", self.webhooks_page, methods=["GET"]),
                Route("/ui/webhooks", self.add_webhook, methods=["POST"]),
                Route("/ui/webhooks/{id}/remove", self.remove_webhook, methods=["POST"]),
                Route("/ui/webhooks/{id}/test", self.test_webhook, methods=["POST"]),
                Route("/ui/keys", self.keys_page, methods=["GET"]),
                Route("/ui/keys", self.create_key, methods=["POST"]),
                Route("/ui/keys/{id}/revoke", self.revoke_key, methods=["POST"])]

    def _write_decision(self, who: SignedIn, read_only: bool, what: str) -> Decision:
        """Whether the page's write controls are enabled, and if not why (shown by them)."""
        if read_only:
            return Decision(False, "Read-only: Redis cannot be written from here now.")
        return may_manage(who.actor, what)

    # -- webhooks ------------------------------------------------------------------------
    async def webhooks_page(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        return await self._webhooks(who)

    async def add_webhook(self, request: Request) -> Response:
        posted = await self.ui.posted(request)
        if isinstance(posted, Response):
            return posted
        who, form = posted
        body: dict[str, Any] = {"url": form.get("url", "").strip(),
                                "format": form.get("format", "json"),
                                "allow_private": form.get("allow_private") == "1"}
        done = await self.ui.act(who, self.webhooks.add, body=body)
        return await self._webhooks(who, _shown(request, done),
                                    created=done.data if done.ok else None,
                                    form=form if not done.ok else None)

    async def remove_webhook(self, request: Request) -> Response:
        who = await self.ui.signed_in(request, need_csrf=True)
        if isinstance(who, Response):
            return who
        done = await self.ui.act(who, self.webhooks.remove,
                                 params={"id": request.path_params["id"]})
        return await self._webhooks(who, _shown(request, done), removed=request.path_params["id"])

    async def test_webhook(self, request: Request) -> Response:
        who = await self.ui.signed_in(request, need_csrf=True)
        if isinstance(who, Response):
            return who
        done = await self.ui.act(who, self.webhooks.test,
                                 params={"id": request.path_params["id"]})
        return await self._webhooks(who, _shown(request, done),
                                    tested=done.data if done.ok else None)

    async def _webhooks(self, who: SignedIn, done: Shown | None = None, *,
                        created: Any = None, removed: str = "", tested: Any = None,
                        form: dict[str, str] | None = None) -> Response:
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        hooks = await self.ui.act(who, self.webhooks.list)
        failed = await self.ui.act(who, self.webhooks.failed, query=f"limit={FAILED_SHOWN}")
        return self.ui.render(
            "webhooks.html", done.page_status if done is not None else 200, nav="webhooks",
            who=who, view=view, hooks=hooks, failed=failed, done=done, created=created,
            removed=removed, tested=tested, form=form or {}, formats=FORMATS,
            may_add=self._write_decision(who, view.read_only, "add webhooks"),
            may_remove=self._write_decision(who, view.read_only, "remove webhooks"),
            may_test=self._write_decision(who, view.read_only, "send test deliveries"))

    # -- keys ----------------------------------------------------------------------------
    async def keys_page(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        return await self._keys(who)

    async def create_key(self, request: Request) -> Response:
        posted = await self.ui.posted(request)
        if isinstance(posted, Response):
            return posted
        who, form = posted
        kind = form.get("kind", "admin")
        body: dict[str, Any] = {"kind": kind, "name": form.get("name", "")}
        if kind == "admin":  # roles are an admin key's; the handler refuses an empty list
            body["roles"] = [role for role in ROLES if form.get(f"role-{role}") == "1"]
        done = await self.ui.act(who, self.keys.create, body=body)
        # The key itself: in this answer only (Cache-Control: no-store), never logged.
        return await self._keys(who, _shown(request, done), created=done.data if done.ok else None,
                                form=form if not done.ok else None)

    async def revoke_key(self, request: Request) -> Response:
        who = await self.ui.signed_in(request, need_csrf=True)
        if isinstance(who, Response):
            return who
        key_id = request.path_params["id"]
        done = await self.ui.act(who, self.keys.revoke, params={"id": key_id})
        if done.ok:
            # As the DELETE route's _forgetting wrapper: this process stops taking it now
            # (on the event loop: the key ring's subscribers close the key's streams).
            self.keys.forget(key_id)
        return await self._keys(who, _shown(request, done), revoked=key_id)

    async def _keys(self, who: SignedIn, done: Shown | None = None, *,
                    created: Any = None, revoked: str = "",
                    form: dict[str, str] | None = None) -> Response:
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        listed = await self.ui.act(who, self.keys.list)
        return self.ui.render(
            "keys.html", done.page_status if done is not None else 200, nav="keys", who=who,
            view=view, listed=listed, done=done, created=created, revoked=revoked,
            form=form or {"kind": "admin", "role-view": "1"}, kinds=KINDS, roles=ROLES,
            may_create=self._write_decision(who, view.read_only, "create keys"),
            may_revoke=self._write_decision(who, view.read_only, "revoke keys"))
