"""Every route of the UI, in one place: the core (``routes.UiRoutes``: sign-in, sessions, the
environment and flags pages, actions through the admin API's handlers) and one module per
page or group of pages, each built on that core."""

from __future__ import annotations

from starlette.routing import BaseRoute

from proxy.ui import live
from proxy.ui.history_page import HistoryPages
from proxy.ui.requests_page import RequestsPages
from proxy.ui.routes import UiRoutes


def mount(ui: UiRoutes) -> list[BaseRoute]:
    return [*ui.routes(),
            *live.routes(ui),  # GET /ui/events: the pages' live channel (SSE)
            *RequestsPages(ui).routes(),
            *HistoryPages(ui).routes()]
