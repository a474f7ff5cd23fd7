"""Every route of the UI, in one place: the core (``routes.UiRoutes``: sign-in, sessions, the
environment and flags pages, actions through the admin API's handlers) and one module per
page or group of pages, each built on that core."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from proxy.ui import live
from proxy.ui.admin_pages import AdminPages
from proxy.ui.flag_page import FlagPage
from proxy.ui.history_page import HistoryPages
from proxy.ui.insight_pages import InsightPages
from proxy.ui.requests_page import RequestsPages
from proxy.ui.routes import UiRoutes


def mount(ui: UiRoutes) -> list[BaseRoute]:
    return [*ui.routes(),
            *live.routes(ui),  # GET /ui/events: the pages' live channel (SSE)
            *RequestsPages(ui).routes(),
            *HistoryPages(ui).routes(),
            *FlagPage(ui).routes(),  # /ui/flags/{key}: a flag's page and its actions
            *InsightPages(ui).routes(),  # experiments, explain (the flags list's columns: views)
            *AdminPages(ui).routes(),  # webhooks, keys
            *links(ui)]  # what notifications link to


def links(ui: UiRoutes) -> list[BaseRoute]:
    """The links notifications carry (``proxy.release.messages``, with ``ui_url`` set):
    ``/ui/envs/ENV/requests/N`` and ``/ui/envs/ENV/history?version=V``, to the pages of the
    signed-in environment (a session is bound to one); a session of another environment is
    told which one the link is for, never shown that environment's request N."""
    async def follow(r: Request, target: str) -> Response:
        who = await ui.signed_in(r)
        if isinstance(who, Response):
            return who
        env = r.path_params["env"]
        if env != who.session.env:
            return ui.refused(f"This link is for environment {env}; you are signed in to "
                               f"{who.session.env}. Sign in with a key of {env}.")
        return RedirectResponse(target, 303)

    async def request(r: Request) -> Response:
        return await follow(r, f"/ui/requests/{r.path_params['id']}")

    async def history(r: Request) -> Response:
        version = r.query_params.get("version", "")
        return await follow(r, "/ui/history" + (f"#version-{version}" if version.isdigit()
                                                else ""))

    return [Route("/ui/envs/{env}/requests/{id:int}", request, methods=["GET"]),
            Route("/ui/envs/{env}/history", history, methods=["GET"])]
