"""Liveness and readiness.

``/healthz``: the process answers. ``/readyz``: 503 until rules are loaded (or the source
has loaded and found none), and while the source refuses its store (a newer Redis layout);
200 ``ok``; 200 ``degraded`` with the reason while stale rules
(last good set, or the bootstrap file) are served because the source is down.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.errors import json_response
from proxy.store import Store


class Health:
    def __init__(self, store: Store, source_ready: Callable[[], bool]):
        self.store = store
        self.source_ready = source_ready

    def routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self.readyz, methods=["GET", "HEAD"])]

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    def state(self) -> tuple[int, dict[str, object]]:
        store = self.store
        envs = dict(store.versions())
        source_ok = self.source_ready()
        if store.refused:
            return 503, {"status": "unavailable", "reason": store.refused, "envs": envs}
        if not store.ready and not source_ok:
            errors = {env: st.last_error for env, st in store.status.items() if st.last_error}
            body: dict[str, object] = {"status": "unavailable",
                                       "reason": "rules not loaded: source not reachable yet"}
            if errors:
                body["errors"] = errors
            return 503, body
        reasons = store.degraded()
        if not source_ok and not reasons:
            reasons = {"*": "rules source disconnected; serving the last loaded rules"}
        if reasons:
            return 200, {"status": "degraded", "reason": "; ".join(
                f"{env}: {why}" for env, why in sorted(reasons.items())), "envs": envs}
        return 200, {"status": "ok", "envs": envs}

    async def readyz(self, _request: Request) -> Response:
        status, body = self.state()
        return json_response(body, status)
