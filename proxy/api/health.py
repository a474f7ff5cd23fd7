"""Liveness and readiness.

``/healthz``: the process answers. ``/readyz``: 503 until rules are loaded (or the source
has loaded and found none), and while the source refuses its store (a newer Redis layout);
200 ``ok``; 200 ``degraded`` while stale rules (last good set, or the bootstrap file) are
served because the source is down or an environment could not be adopted. ``rejected``: how
many flags the sources hold but serve as an error (or at their last good version) because
their definition is invalid; still ready, since every other flag is served.

The body is what a load balancer needs and no more, since /readyz is open to the internet:
a status and a short reason from a fixed vocabulary ("redis unreachable", "stale: 2
environments"), never the source's own error text (Redis errors name internal addresses).
The full reasons go to the log when they change. The served version of each environment
(``envs``) is listed only to those who may read /metrics, which shows as much (and, with an
``admin_port``, only on that port).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.errors import json_response
from proxy.api.metrics import MetricsAccess
from proxy.store import Store

log = logging.getLogger("flagedge.health")


class Health:
    def __init__(self, store: Store, source_ready: Callable[[], bool], *,
                 source: str = "rules source", access: MetricsAccess | None = None,
                 details: Callable[[Request], bool] | None = None):
        """``source`` names the rules source in reasons ("redis", "rules file");
        ``details(request)``: may it see ``envs`` (default: whoever may read /metrics)."""
        self.store = store
        self.source_ready = source_ready
        self.source = source
        self.details = details or (access or MetricsAccess()).allows
        self._logged: object = None  # the last details logged (log on change only)

    def routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self.readyz, methods=["GET", "HEAD"])]

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    def state(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, body without ``envs``)."""
        store = self.store
        source_ok = self.source_ready()
        if store.refused:  # a fixed phrase with two numbers: nothing internal
            return 503, {"status": "unavailable", "reason": store.refused}
        if not store.ready and not source_ok:
            self._log_details("not ready", {env: st.last_error for env, st in
                                            store.status.items() if st.last_error})
            why = "invalid" if store.invalid() else "unreachable"
            return 503, {"status": "unavailable",
                         "reason": f"{self.source} {why}: no rules loaded yet"}
        reasons = store.degraded()
        self._log_details("degraded" if reasons else "ready", reasons)
        parts = []
        if not source_ok or "*" in reasons:
            parts.append(f"{self.source} unreachable")
        stale = len(reasons) - ("*" in reasons)
        if stale:
            parts.append(f"stale: {stale} environment{'' if stale == 1 else 's'}")
        body: dict[str, object] = {"status": "ok"}
        if parts:
            body = {"status": "degraded", "reason": "; ".join(parts)}
        rejected = store.rejected()
        if rejected:  # invalid flags answer their error; every other flag is served: ready
            body["rejected"] = rejected
        return 200, body

    def _log_details(self, what: str, details: dict[str, str]) -> None:
        if (what, details) != self._logged:
            self._logged = (what, details)
            if details:
                log.warning("readiness %s: %s", what, "; ".join(
                    f"{env}: {why}" for env, why in sorted(details.items())))

    async def readyz(self, request: Request) -> Response:
        status, body = self.state()
        if self.details(request):
            body["envs"] = dict(self.store.versions())
        return json_response(body, status)
