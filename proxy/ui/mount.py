"""Every route of the UI, in one place: the core (``routes.UiRoutes``: sign-in, sessions, the
environment and flags pages, actions through the admin API's handlers) and one module per
page or group of pages, each built on that core."""

from __future__ import annotations

from starlette.routing import BaseRoute

from proxy.ui.admin_pages import AdminPages
from proxy.ui.insight_pages import InsightPages
from proxy.ui.routes import UiRoutes


def mount(ui: UiRoutes) -> list[BaseRoute]:
    return [*ui.routes(),
            *InsightPages(ui).routes(),  # experiments, explain (the flags list's columns: views)
            *AdminPages(ui).routes()]  # webhooks, keys
