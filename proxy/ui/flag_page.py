"""The flag page of the management UI (DESIGN §12), built on the core (``routes.UiRoutes``):

- ``GET /ui/flags/{key}``: the flag's state, type, variants and default, the environment's
  version, its JSON in an editor, the one-line switches, and its progressive rollout with
  the steps' times (the step in force highlighted);
- ``POST .../check``: the edited flag inside the live document through the admin API's
  preview handler (``ReleaseApi.preview``): the problems at their JSON paths (a malformed
  text: its line and column), the diff against live, the impact on sampled users per
  variant; nothing is written;
- ``POST .../save``: the push handler (``ReleaseApi.push``) with ``If-Match`` the version
  the editor was opened at (a write that raced another is a conflict, never an overwrite),
  or, where the environment is protected, the requests handler (``RequestsApi.create``, with
  the message);
- ``POST .../edit`` ``op=disable|enable|default|percent``: ``FlagsApi.edit``; ``POST
  .../kill``: its ``disable`` from the flags list, answered with the list's row;
- ``POST .../rollout`` (start), ``.../rollout/pause``, ``.../rollout/abort``:
  ``RolloutsApi``.

Every write runs an admin API handler through ``UiRoutes.act`` as the signed-in key, so
release/ authorizes it and refuses what the key may not do; ``flag_view`` only asks
release/ which controls to show disabled, and why. POSTs answer htmx with a fragment
(``flag_*.html``) and the handler's status; a write that did something also sends
``HX-Trigger: flag-changed``, on which the page's read-only regions reload themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from proxy.api.admin_flags import FlagsApi
from proxy.api.admin_release import ReleaseApi
from proxy.api.admin_requests import RequestsApi
from proxy.api.admin_rollouts import RolloutsApi
from proxy.release import authorization as authz
from proxy.release import publisher, rollout
from proxy.storage import policy
from proxy.storage.layout import LayoutTooNew
from proxy.ui import views
from proxy.ui.flag_view import (
    Control,
    ParseError,
    Written,
    compact,
    conflict_text,
    dom_id,
    flag_controls,
    json_diff,
    op_body,
    parse_flag,
    parse_steps,
    pretty,
    problem_path,
    rollout_steps,
    variant_shifts,
    with_flag,
    write_control,
    written,
)
from proxy.ui.routes import Outcome, SignedIn, UiRoutes

log = logging.getLogger("flagedge.ui")

CHANGED = {"HX-Trigger": "flag-changed"}  # the page's regions reload on it


@dataclass(frozen=True, slots=True)
class FlagView:
    """One flag as the page shows it: the environment (banner, policy, read-only), the flag's
    JSON (None: no such flag) at ``version``, and its rollout (``rollout.status``) if any."""

    view: views.EnvView
    key: str
    flag: dict[str, Any] | None
    version: int | None
    rollout: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Live:
    """The environment as a write starts from it (read in one snapshot)."""

    version: int
    document: dict[str, Any]
    policy: policy.Policy


class FlagPage:
    def __init__(self, ui: UiRoutes):
        self.ui = ui
        self.flags, self.release = FlagsApi(ui.calls), ReleaseApi(ui.calls)
        self.requests, self.rollouts = RequestsApi(ui.calls), RolloutsApi(ui.calls)
        # The flags list (templates/flags.html) shows a kill switch on each row.
        ui.templates.globals["kill_control"] = kill_control
        ui.templates.filters["dom_id"] = dom_id
        ui.templates.filters["problem_path"] = problem_path
        ui.templates.filters["flag_url"] = flag_url

    def routes(self) -> list[BaseRoute]:
        one = "/ui/flags/{key:path}"
        post = {"check": self.check, "save": self.save, "edit": self.edit, "kill": self.kill,
                "rollout/pause": self.pause, "rollout/abort": self.abort,
                "rollout": self.start}
        return [*(Route(f"{one}/{action}", handler, methods=["POST"])
                  for action, handler in post.items()),
                Route(one, self.page, methods=["GET"])]

    # -- the page ------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        shown = await asyncio.to_thread(self._read, who.session.env,
                                        request.path_params["key"])
        view = shown.view
        controls = flag_controls(who.actor, view.policy, view.problem if view.read_only else "",
                                 shown.rollout["state"] if shown.rollout else None)
        return self.ui.render(
            "flag.html", 200 if shown.flag is not None else 404, nav="flags", who=who,
            view=view, shown=shown, controls=controls, facts=facts(shown.flag),
            editor=pretty(shown.flag) if shown.flag is not None else "",
            steps=rollout_steps(shown.rollout) if shown.rollout else [])

    def _read(self, env: str, key: str) -> FlagView:
        """Live from Redis, else what this proxy serves (read-only, with the banner)."""
        view = self.ui.read(env)
        if not view.read_only:
            try:
                return self._read_live(view, env, key)
            except (RedisError, OSError, LayoutTooNew) as exc:
                log.warning("ui: Redis unreadable (%s): the flag page is read-only",
                            type(exc).__name__)
                view = views.read_served(self.ui.store, env, views.CACHED, "Redis is "
                                         "unreachable: read-only, showing what this proxy "
                                         "last loaded.")
        served = self.ui.store.get(env)
        flag = served.flags.get(key) if served is not None else None
        return FlagView(view, key, dict(flag.raw) if flag else None, view.version)

    def _read_live(self, view: views.EnvView, env: str, key: str) -> FlagView:
        client = self.ui.redis()
        state = publisher.read_state(client, env)
        flag = state.document().flags.get(key)
        try:
            status: dict[str, Any] | None = rollout.status(client, env, key)
        except (LookupError, ValueError):  # none, or a record another tool broke
            status = None
        return FlagView(view, key, flag, state.version, status)

    # -- check: preview, nothing written -------------------------------------------------
    async def check(self, request: Request) -> Response:
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, form, key = got
        edited = parse_flag(form.get("flag", ""))
        if isinstance(edited, ParseError):
            return self.ui.render("flag_check.html", 422, parse_error=edited)
        live = await self._live(who.session.env)
        if isinstance(live, Written):
            return self.ui.render("flag_check.html", 503, failed=live)
        answer = await self.ui.act(who, self.release.preview,
                                   body={"document": with_flag(live.document, key, edited)})
        if not answer.ok:
            return self.ui.render("flag_check.html", answer.status, failed=said(answer))
        impact = [{**i, "shifts": variant_shifts(i["transitions"])}
                  for i in answer.data["impact"]]
        return self.ui.render(
            "flag_check.html", diff=json_diff(live.document["flags"].get(key), edited),
            summary=answer.data["diff"]["changed"].get(key, []), impact=impact,
            live_version=answer.data["base_version"], base=_int(form.get("base_version")))

    # -- save or propose -----------------------------------------------------------------
    async def save(self, request: Request) -> Response:
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, form, key = got
        edited, base = parse_flag(form.get("flag", "")), _int(form.get("base_version"))
        if isinstance(edited, ParseError):
            return self.ui.render("flag_result.html", 422, parse_error=edited)
        if base is None:
            return self._said(400, Written("refused", "The form has no base version: reload "
                                                      "the page."))
        live = await self._live(who.session.env)
        if isinstance(live, Written):
            return self._said(503, live)
        if live.version != base:  # the push's If-Match would say so too; no need to ask
            return self._said(409, Written("conflict", conflict_text(live.version, base)))
        document, message = with_flag(live.document, key, edited), form.get("message", "")
        route = authz.write_route(who.actor, live.policy, authz.WriteKind.CHANGE)
        if route.reason == authz.APPROVAL_REQUIRED:  # protected: the request it would apply
            return await self._propose(who, document, message.strip(), base, live.policy)
        answer = await self.ui.act(who, self.release.push,
                                   body={"document": document, "message": message.strip()},
                                   headers={"If-Match": f'"{base}"'})
        return self._answer(answer, base=base, new_base=True)

    async def _propose(self, who: SignedIn, document: dict[str, Any], message: str, base: int,
                       rules: policy.Policy) -> Response:
        answer = await self.ui.act(who, self.requests.create, body={
            "document": document, "message": message, "base_version": base})
        if answer.status == 409:  # another write landed since the page read its version
            return self._said(409, Written("conflict", conflict_text(
                (answer.data or {}).get("version", base), base)))
        return self._answer(answer, approvals=rules.approvals, base=base)

    # -- one-line switches ---------------------------------------------------------------
    async def edit(self, request: Request) -> Response:
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, form, key = got
        body = op_body(form)
        if isinstance(body, str):
            return self._said(422, Written("refused", body))
        answer = await self.ui.act(who, self.flags.edit, params={"key": key}, body=body)
        return self._answer(answer, approvals=await self._approvals(who, answer))

    async def kill(self, request: Request) -> Response:
        """The flags list's kill switch: the row, updated in place, saying what happened."""
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, _form, key = got
        answer = await self.ui.act(who, self.flags.edit, params={"key": key},
                                   body={"op": "disable"})
        outcome = said(answer, approvals=await self._approvals(who, answer))
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        row = next((r for r in view.flags if r.key == key), None)
        response = self.ui.render("flag_list_row.html", answer.status if not answer.ok
                                   else 200, row=row, key=key, who=who, view=view,
                                   said=outcome, kill=kill_control(who, view))
        if answer.ok:
            response.headers.update(CHANGED)
        return response

    # -- progressive rollout -------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, form, key = got
        steps = parse_steps(form.get("steps", ""))
        if isinstance(steps, str):
            return self._said(422, Written("refused", steps))
        body = {"variant": form.get("variant", ""), "steps": steps,
                "every": form.get("every", "").strip(), "message": form.get("message", "")}
        answer = await self.ui.act(who, self.rollouts.start, params={"key": key}, body=body)
        return self._answer(answer, approvals=await self._approvals(who, answer))

    async def pause(self, request: Request) -> Response:
        return await self._rollout_kill(request, self.rollouts.pause)

    async def abort(self, request: Request) -> Response:
        return await self._rollout_kill(request, self.rollouts.abort)

    async def _rollout_kill(self, request: Request, handler: Any) -> Response:
        got = await self._acting(request)
        if isinstance(got, Response):
            return got
        who, _form, key = got
        answer = await self.ui.act(who, handler, params={"key": key}, body={})
        return self._answer(answer, approvals=await self._approvals(who, answer))

    # -- helpers -------------------------------------------------------------------------
    async def _acting(self, request: Request) -> tuple[SignedIn, dict[str, str], str] | Response:
        """The signed-in caller of a POST (its CSRF token checked), its form, the flag key."""
        posted = await self.ui.posted(request)
        if isinstance(posted, Response):
            return posted
        who, form = posted
        return who, form, request.path_params["key"]

    async def _live(self, env: str) -> Live | Written:
        if self.ui.settings.flags is not None:
            return Written("refused", "This proxy serves a rules file (--flags): read-only.")

        def read() -> Live:
            client = self.ui.redis()
            state = publisher.read_state(client, env)
            return Live(state.version, state.document().to_json(), policy.read(client, env))
        try:
            return await asyncio.to_thread(read)
        except (RedisError, OSError, LayoutTooNew) as exc:
            return Written("refused", f"Redis is unreachable ({type(exc).__name__}): nothing "
                                      "was done.")

    async def _approvals(self, who: SignedIn, answer: Outcome) -> int:
        """The approvals a request just proposed needs (the policy as it is now)."""
        if not answer.ok or not isinstance(answer.data, dict) or not answer.data.get("request"):
            return 0
        rules = await asyncio.to_thread(policy.read, self.ui.redis(), who.session.env)
        return rules.approvals

    def _answer(self, answer: Outcome, *, approvals: int = 0, base: int | None = None,
                new_base: bool = False) -> Response:
        outcome = said(answer, approvals=approvals, base=base)
        response = self._said(answer.status if not answer.ok else 200, outcome,
                              new_base=outcome.version if new_base and
                              outcome.kind == "written" else None)
        if outcome.kind in ("written", "proposed"):
            response.headers.update(CHANGED)
        return response

    def _said(self, status: int, outcome: Written, new_base: int | None = None) -> HTMLResponse:
        return self.ui.render("flag_result.html", status, said=outcome, new_base=new_base)


def said(answer: Outcome, *, approvals: int = 0, base: int | None = None) -> Written:
    return written(answer.status, answer.data, answer.error, answer.problems,
                   approvals=approvals, base_version=base)


def kill_control(who: SignedIn, view: views.EnvView) -> Control:
    """The flags list's kill switch for the signed-in key (a Jinja global)."""
    return write_control(who.actor, view.policy, authz.WriteKind.KILL, "Kill",
                         view.problem if view.read_only else "")


def facts(flag: Mapping[str, Any] | None) -> dict[str, Any]:
    """State, type, variants and default as the page lists them."""
    if flag is None:
        return {}
    variants = flag.get("variants") if isinstance(flag.get("variants"), Mapping) else {}
    return {"state": str(flag.get("state", "")), "type": views.type_of(variants),
            "variants": {name: compact(value) for name, value in variants.items()},
            "default": flag.get("defaultVariant")}


def flag_url(key: str) -> str:
    return "/ui/flags/" + quote(key, safe="/")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
