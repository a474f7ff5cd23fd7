"""The management UI's routes (DESIGN §12), mounted at ``/ui/`` on the admin surface.

- ``GET /ui/signin`` the form; ``POST /ui/signin`` an admin key -> the session cookie
  (``proxy.ui.sessions``); the key is identified by the same ``Authenticator`` the admin API
  uses and is never kept, logged or shown again;
- ``POST /ui/signout`` revokes the session everywhere (``proxy.storage.sessions``);
- ``GET /ui/`` the environment page, ``GET /ui/flags?q=`` the flags list (``proxy.ui.views``);
- ``/ui/static/`` the package's assets (htmx vendored, ``proxy.ui.assets``).

Every POST needs the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``),
sign-in a token bound to its form's nonce cookie: else 403. A session ends when it expires,
when it is signed out (on any replica) and when its key is revoked or deleted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from proxy.api import errors
from proxy.api.admin_calls import AdminCalls, Call, Handler, failure
from proxy.api.auth import Authenticator, Principal
from proxy.api.context import request_body
from proxy.api.tokens import StreamTokens
from proxy.config import Settings
from proxy.keys import KeyRing
from proxy.release.authorization import Actor, may_view
from proxy.release.times import iso
from proxy.storage import sessions as revocations
from proxy.storage.layout import LayoutTooNew
from proxy.storage.url import sync_client
from proxy.store import Store
from proxy.ui import sessions, views
from proxy.ui.assets import STATIC

log = logging.getLogger("flagedge.ui")

COOKIE = "flagedge_ui"
SIGNIN_COOKIE = "flagedge_ui_signin"
SIGNIN_LIFETIME_S = 3600
CSRF_HEADER = "x-csrf-token"
# No inline script or style anywhere: htmx's own indicator styles are off (base.html).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action "
                               "'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOTICES = {  # ?notice= on the sign-in page: fixed texts, never echoed input
    "signed-out": "You are signed out.",
    "expired": "Your session has ended: sign in again.",
    "revoked": "Your key was revoked or changed: sign in with a valid admin key.",
}


@dataclass(frozen=True, slots=True)
class SignedIn:
    session: sessions.Session
    actor: Actor
    csrf: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action answered, for the page: the admin API's status and JSON (``data``), and
    for a refusal its message in words (``error``: the 4xx/5xx body's ``errorDetails``) and
    any problems with their JSON paths (a 422 ``INVALID_DOCUMENT``)."""

    status: int
    data: Any = None
    error: str = ""
    problems: tuple[dict[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status < 400


class UiRoutes:
    """One per app: the key ring and authenticator (who signs in), the store (what the pages
    show when Redis cannot be read), the shared secret (``StreamTokens.secret``: Redis
    ``flagedge:secret`` or ``stream_secret``, the same on every replica)."""

    def __init__(self, settings: Settings, auth: Authenticator, keyring: KeyRing,
                 store: Store, tokens: StreamTokens, calls: AdminCalls):
        self.settings, self.auth, self.keyring = settings, auth, keyring
        self.calls = calls
        self.store, self.tokens = store, tokens
        self.templates = Environment(loader=PackageLoader("proxy.ui", "templates"),
                                     autoescape=select_autoescape(default=True))
        self.templates.filters["matching"] = lambda rows, q: [r for r in rows if r.matches(q)]
        self.templates.filters["iso"] = iso
        self._client: Any = None
        self._client_lock = threading.Lock()
        # Sessions signed out here: honoured even when Redis (or file mode) cannot tell us.
        self._revoked_here: dict[str, float] = {}
        # What else closes with the UI on the app's shutdown (the live channel, ui/live.py).
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    def routes(self) -> list[BaseRoute]:
        return [Route("/ui", lambda _r: RedirectResponse("/ui/", 307), methods=["GET"]),
                Route("/ui/", self.env_page, methods=["GET"]),
                Route("/ui/flags", self.flags_page, methods=["GET"]),
                Route("/ui/signin", self.signin_form, methods=["GET"]),
                Route("/ui/signin", self.signin, methods=["POST"]),
                Route("/ui/signout", self.signout, methods=["POST"]),
                Mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")]

    # -- pages ---------------------------------------------------------------------------
    async def env_page(self, request: Request) -> Response:
        return await self._page(request, "env.html", "environment", requests=True)

    async def flags_page(self, request: Request) -> Response:
        return await self._page(request, "flags.html", "flags", insights=True,
                                query=request.query_params.get("q", "")[:200],
                                stale_only=request.query_params.get("stale") == "1")

    async def _page(self, request: Request, template: str, nav: str, *,
                    insights: bool = False, requests: bool = False, **extra: Any) -> Response:
        who = await self.signed_in(request)
        if isinstance(who, Response):
            return who
        view = await asyncio.to_thread(self.read, who.session.env, insights, requests)
        return self.render(template, nav=nav, who=who, view=view, **extra)

    def read(self, env: str, insights: bool = False, requests: bool = False) -> views.EnvView:
        """``insights``: with the flags list's insight columns (``proxy.ui.insight_pages``);
        ``requests``: with the count of open change requests (the environment page)."""
        if self.settings.flags is not None:
            return views.read_served(self.store, env, views.FILE,
                                     "This proxy serves a rules file (--flags): read-only.")
        try:
            return views.read_live(self.redis(), env, insights=insights, requests=requests)
        except (RedisError, OSError, LayoutTooNew) as exc:
            log.warning("ui: Redis unreadable (%s): showing what this proxy serves",
                        type(exc).__name__)
            why = ("Redis holds a newer layout than this flagedge" if isinstance(exc, LayoutTooNew)
                   else "Redis is unreachable")
            return views.read_served(self.store, env, views.CACHED,
                                     f"{why}: read-only, showing what this proxy last loaded.")

    # -- sign-in and sign-out ------------------------------------------------------------
    async def signin_form(self, request: Request) -> Response:
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        return self._signin_page(notice=notice)

    async def signin(self, request: Request) -> Response:
        form = await self.form(request)
        if isinstance(form, Response):
            return form
        if not sessions.signin_ok(request.cookies.get(SIGNIN_COOKIE), self.tokens.secret,
                                  form.get("csrf")):
            return self.refused("The sign-in form expired or did not come from this site: "
                                 "reload the page and try again.")
        principal = self._principal(form.get("key", "").strip())
        if isinstance(principal, Response):
            return self._signin_page(error=_why(principal), status=principal.status_code)
        actor = self.actor(principal.key_id, principal.name)
        if actor is None or not may_view(actor):
            return self._signin_page(error="This key holds no role that may use the UI.",
                                     status=403)
        session = sessions.new_session(principal.key_id, principal.env, time.time())
        log.info("ui sign-in by %s (key %s) on %s", actor.name, principal.key_id, principal.env)
        response = RedirectResponse("/ui/", 303)
        self._set_cookie(request, response, COOKIE,
                         sessions.encode(session, self.tokens.secret), sessions.LIFETIME_S)
        response.delete_cookie(SIGNIN_COOKIE, path="/ui")
        return response

    async def signout(self, request: Request) -> Response:
        who = await self.signed_in(request, need_csrf=True)
        if isinstance(who, Response):
            return who
        session = who.session
        self._revoked_here[session.sid] = session.expires
        if self.settings.flags is None:
            try:
                ttl = session.ttl(time.time())
                await asyncio.to_thread(lambda: revocations.revoke(self.redis(), session.sid,
                                                                   ttl))
            except (RedisError, OSError) as exc:
                # Signed out here; other replicas learn of it only through Redis.
                log.warning("ui: sign-out of %s not recorded in Redis (%s): other replicas "
                            "accept the session until it expires", who.actor.name,
                            type(exc).__name__)
        log.info("ui sign-out by %s (key %s)", who.actor.name, session.key_id)
        response = RedirectResponse("/ui/signin?notice=signed-out", 303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    # -- who is calling ------------------------------------------------------------------
    async def posted(self, request: Request) -> tuple[SignedIn, dict[str, str]] | Response:
        """A write's caller (its CSRF token checked) and its form; else the refusal."""
        who = await self.signed_in(request, need_csrf=True)
        if isinstance(who, Response):
            return who
        form = await self.form(request)
        return form if isinstance(form, Response) else (who, form)

    async def signed_in(self, request: Request, *,
                         need_csrf: bool = False) -> SignedIn | Response:
        """The caller's live session, or the answer for one without: the sign-in page (a
        redirect) for a missing, expired, revoked one; 403 for a POST without its CSRF token."""
        secret = self.tokens.secret
        session = sessions.decode(request.cookies.get(COOKIE), (secret,), time.time())
        if session is None:
            return self._to_signin("expired" if COOKIE in request.cookies else "")
        record = self.keyring.by_id(session.key_id)
        actor = self.actor(session.key_id, record.name if record else "")
        if actor is None or (record is not None and record.env != session.env):
            return self._to_signin("revoked")
        if await self.is_revoked(session.sid):
            return self._to_signin("expired")
        if need_csrf:
            form = await self.form(request)
            presented = (request.headers.get(CSRF_HEADER) or
                         (form.get("csrf") if isinstance(form, dict) else None))
            if not sessions.csrf_ok(session, secret, presented):
                return self.refused("This form's security token is missing or wrong: "
                                     "reload the page and try again.")
        return SignedIn(session, actor, sessions.csrf_token(session, secret))

    async def is_revoked(self, sid: str) -> bool:
        now = time.time()
        self._revoked_here = {s: exp for s, exp in self._revoked_here.items() if exp > now}
        if sid in self._revoked_here:
            return True
        if self.settings.flags is not None:
            return False
        try:
            return await asyncio.to_thread(lambda: revocations.is_revoked(self.redis(), sid))
        except (RedisError, OSError):
            # Redis down: the pages are read-only and show what this proxy serves; refusing
            # every session would leave a blank sign-in page instead (docs/design-notes.md).
            return False

    def _principal(self, key: str) -> Principal | Response:
        if not key:
            return errors.unauthorized("missing API key")
        # The admin API's own check (key ring, kind, rate limit), without a request: the
        # key travels in the form body, never in a URL or a header the access log keeps.
        return self.auth.authorize(None, "admin",
                                   headers={b"authorization": f"Bearer {key}".encode()})

    def actor(self, key_id: str, name: str) -> Actor | None:
        """As the admin API decides it: the key's name and roles, a trusted operator with
        --no-auth, None for a key that is gone (revoked since)."""
        if self.auth.no_auth:
            return Actor.cli(name or "no-auth")
        record = self.keyring.by_id(key_id)
        if record is None or record.kind != "admin":
            return None
        return Actor.of_key(record)

    # -- actions: the admin API's own handlers, as the signed-in key --------------------
    async def act(self, who: SignedIn, handler: Handler, *, params: dict[str, str] | None = None,
                  body: dict[str, Any] | None = None, query: str = "",
                  headers: dict[str, str] | None = None) -> Outcome:
        """Run an admin API handler (``proxy.api.admin_*``: release/ with the caller's Actor)
        for the signed-in key, exactly as its route would for that key's Bearer token: same
        authorization, same errors. ``params`` are the route's path parameters (``env`` is
        the session's), ``query`` its query string, ``headers`` e.g. ``If-Match``."""
        if self.settings.flags is not None:
            return Outcome(503, error="This proxy serves a rules file (--flags): read-only.")
        scope = {"type": "http", "method": "POST", "path": "/ui", "query_string":
                 query.encode(), "headers": [(k.lower().encode(), v.encode())
                                             for k, v in (headers or {}).items()],
                 "path_params": {**(params or {}), "env": who.session.env}}
        call = Call(who.session.env, who.actor, who.session.key_id, Request(scope), body or {})
        client = self.redis()
        try:
            out = await asyncio.to_thread(handler, client, call)
        except Exception as exc:
            answer = failure(exc, who.session.env)
            if answer is None:
                raise
            return outcome(answer)
        return outcome(out) if isinstance(out, Response) else Outcome(200, out)

    # -- helpers -------------------------------------------------------------------------
    async def form(self, request: Request) -> dict[str, str] | Response:
        """The urlencoded form, read from the body once per request and kept in the
        request's state: ``request_body`` reads the ASGI stream itself (no Starlette cache),
        so a second read (the CSRF check, then the action) would wait forever."""
        kept = getattr(request.state, "ui_form", None)
        if kept is not None:
            return kept
        raw = await request_body(request, self.settings.body_limit)
        if isinstance(raw, Response):
            request.state.ui_form = raw  # the refusal (too large), not a second read
            return raw
        fields = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        form = {name: values[0] for name, values in fields.items()}
        request.state.ui_form = form
        return form

    def redis(self) -> Any:
        """The blocking client, made on first use in a worker thread (a Cluster client
        connects as it is made: not on the loop); the lock keeps two threads from making two.
        Short timeouts: a page falls back to the served copy rather than hang."""
        with self._client_lock:
            if self._client is None:
                self._client = sync_client(self.settings.redis, cluster=self.settings.cluster,
                                           socket_connect_timeout=2, socket_timeout=5)
            return self._client

    async def close(self) -> None:
        for hook in self.on_close:
            await hook()
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def _signin_page(self, *, error: str = "", notice: str = "",
                     status: int = 200) -> Response:
        nonce = sessions.new_nonce()
        response = self.render("signin.html", status, error=error, notice=notice,
                                csrf=sessions.signin_token(nonce, self.tokens.secret))
        response.set_cookie(SIGNIN_COOKIE, nonce, max_age=SIGNIN_LIFETIME_S, path="/ui",
                            httponly=True, samesite="strict")
        return response

    def refused(self, reason: str) -> Response:
        return self.render("refused.html", 403, reason=reason)

    def _to_signin(self, notice: str) -> Response:
        response = RedirectResponse(f"/ui/signin?notice={notice}" if notice else "/ui/signin",
                                    303)
        if notice:
            response.delete_cookie(COOKIE, path="/ui")
        return response

    @staticmethod
    def _set_cookie(request: Request, response: Response, name: str, value: str,
                    max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")


def outcome(response: Response) -> Outcome:
    """An admin API Response (JSON) as an Outcome."""
    try:
        data = orjson.loads(bytes(response.body))
    except orjson.JSONDecodeError:
        data = None
    if response.status_code < 400:
        return Outcome(response.status_code, data)
    details = data.get("errorDetails", "") if isinstance(data, dict) else ""
    problems = tuple(data.get("problems", ())) if isinstance(data, dict) else ()
    return Outcome(response.status_code, data, details or f"refused ({response.status_code})",
                   problems)


def _why(refusal: Response) -> str:
    """A failed sign-in, in words (the key itself is never echoed)."""
    return {401: "That key is not a valid admin key (unknown or revoked).",
            403: "That key is not an admin key.",
            429: "Too many attempts with this key: wait a moment and try again.",
            503: "Keys are not loaded yet (Redis unreachable): try again shortly."}.get(
        refusal.status_code, "Sign-in failed.")
