"""Operator endpoints: ``POST /v1/explain/{key}`` ("why did this user get this variant":
the evaluation plus the rule path taken) and ``GET /v1/envs`` (what this replica serves)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.auth import Authenticator
from proxy.api.bulk_body import ofrep_item
from proxy.api.context import BadContext, check_context, parse_request, request_body
from proxy.config import Settings
from proxy.evaluation.engine import explain
from proxy.model import ErrorCode, FlagSet
from proxy.store import Store

try:
    VERSION = version("flagedge")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    VERSION = "0+unknown"


class AdminApi:
    def __init__(self, settings: Settings, store: Store, auth: Authenticator,
                 source_ready: Callable[[], bool]):
        self.settings, self.store, self.auth, self.source_ready = settings, store, auth, source_ready

    def routes(self) -> list[Route]:
        return [Route("/v1/explain/{key:path}", self.explain, methods=["POST"]),
                Route("/v1/envs", self.envs, methods=["GET"])]

    async def explain(self, request: Request) -> Response:
        key = request.path_params["key"]
        principal = self.auth.authorize(request, "server")
        if isinstance(principal, Response):
            return principal
        body = await request_body(request, self.settings.body_limit)
        if isinstance(body, Response):
            return body
        try:
            context = parse_request(body, request.headers.get("content-type"))
            check_context(context, self.settings.max_context_depth, self.settings.max_context_items)
        except BadContext as exc:
            return errors.ofrep_error(400, exc.code, exc.details, key=key)
        flag_set = self.store.get(principal.env)
        if flag_set is None:
            if not self.source_ready():
                return errors.unavailable("no rules loaded yet")
            return errors.ofrep_error(404, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found",
                                      key=key)
        answer = explanation(principal.env, flag_set, key, context)
        if answer["result"].get("errorCode") == ErrorCode.FLAG_NOT_FOUND.value:
            return errors.ofrep_error(404, ErrorCode.FLAG_NOT_FOUND,
                                      answer["result"].get("errorDetails") or "flag not found",
                                      key=key)
        return errors.json_response(answer)

    async def envs(self, request: Request) -> Response:
        principal = self.auth.authorize(request, "server")
        if isinstance(principal, Response):
            return principal
        names = [principal.env]  # every key, admin too, is bound to one environment
        out: dict[str, Any] = {}
        for env in names:
            fs = self.store.get(env)
            if fs is None:
                continue
            status = self.store.status.get(env) or self.store.status.get("*")
            out[env] = {"version": fs.version, "epoch": fs.epoch, "updatedAt": fs.updated_at,
                        "flags": len(fs.flags), "fractionalHash": fs.fractional_hash.value,
                        "connected": bool(status and status.connected),
                        "degraded": status.degraded_reason if status else None}
        return errors.json_response({"flagedge": VERSION, "envs": out})


def explanation(env: str, flag_set: FlagSet, key: str, context: dict[str, Any]
                ) -> dict[str, Any]:
    """``POST /v1/explain``'s answer (the UI's explain page shows the same): the OFREP result,
    the rule path taken, the context and the flag's definition."""
    result, path = explain(flag_set, key, context)
    flag = flag_set.flags.get(key)
    out: dict[str, Any] = {
        "env": env,
        "version": flag_set.version,
        "fractionalHash": flag_set.fractional_hash.value,
        "result": ofrep_item(result, flag),
        "path": list(path),
        "context": context,
    }
    if flag is not None:
        out["flag"] = dict(flag.raw)
    return out
