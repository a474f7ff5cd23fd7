"""Insights over the admin API (DESIGN §11; the same as ``flagedge insights``): admin keys
holding any role (``view`` and up, DESIGN §10) read their own environment's

- ``GET /v1/admin/insights/flags?since=24h``: exposures per flag, variant and reason,
  unique users, last evaluated, usage completeness;
- ``GET /v1/admin/insights/stale?unused=30d``: stale flags;
- ``GET /v1/admin/insights/experiments/{key}?event=NAME``: an experiment's results;
- ``GET /v1/admin/insights/live?minutes=60`` (SSE, for the UI): a ``put`` of the last
  ``minutes`` per-minute exposures per flag and variant, then a ``minute`` event with the
  current minute's (and the one before, still filling from other workers) whenever they
  change, checked every ``insights_flush`` seconds.

An admin module: it reads Redis (a blocking client, in a worker thread, off the event loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.api import errors
from proxy.api.auth import Authenticator
from proxy.api.streams import server_exiting
from proxy.config import Settings
from proxy.insights import usage
from proxy.keys import KeyRing
from proxy.release.authorization import Actor, may_view
from proxy.release.publisher import read_state
from proxy.release.times import parse_duration
from proxy.storage.insights import minute_of, minutes_between
from proxy.storage.url import sync_client

MAX_LIVE_MINUTES = 24 * 60


class InsightsApi:
    def __init__(self, settings: Settings, auth: Authenticator, keyring: KeyRing):
        self.settings, self.auth, self.keyring = settings, auth, keyring
        self._client: Any = None

    def routes(self) -> list[Route]:
        return [Route("/v1/admin/insights/flags", self.flags, methods=["GET"]),
                Route("/v1/admin/insights/stale", self.stale, methods=["GET"]),
                Route("/v1/admin/insights/experiments/{key:path}", self.experiment,
                      methods=["GET"]),
                Route("/v1/admin/insights/live", self.live, methods=["GET"])]

    def _viewer(self, request: Request) -> str | Response:
        """The caller's environment, or the refusal."""
        principal = self.auth.authorize(request, "admin")
        if isinstance(principal, Response):
            return principal
        record = self.keyring.by_id(principal.key_id)
        if record is not None:  # None: --no-auth, where every caller is trusted
            decision = may_view(Actor.of_key(record))
            if not decision:
                return errors.forbidden(decision.reason)
        if self.settings.flags is not None:
            return errors.unavailable("insights need a Redis source (this proxy serves a file)")
        return principal.env

    def _redis(self) -> Any:
        if self._client is None:
            self._client = sync_client(self.settings.redis, cluster=self.settings.cluster,
                                       socket_connect_timeout=5, socket_timeout=10)
        return self._client

    async def _read(self, env: str, read: Callable[[Any, Any], Any]) -> Response:
        """``read(client, state)`` in a worker thread; its dict as JSON, or a clear error."""
        def run() -> Any:
            client = self._redis()
            state = read_state(client, env)
            if not state.exists:
                return errors.ofrep_error(404, "NOT_FOUND", f"environment {env!r} not found")
            return read(client, state)

        try:
            out = await asyncio.to_thread(run)
        except usage.NotAnExperiment as exc:
            return errors.ofrep_error(404, "NOT_FOUND", str(exc))
        except OSError as exc:  # redis' connection errors are OSErrors too
            return errors.unavailable(f"Redis unreachable: {type(exc).__name__}")
        return out if isinstance(out, Response) else errors.json_response(out)

    async def flags(self, request: Request) -> Response:
        env = self._viewer(request)
        if isinstance(env, Response):
            return env
        since = _duration(request, "since", "24h")
        if isinstance(since, Response):
            return since
        end = time.time()
        return await self._read(env, lambda client, state: usage.flags_report(
            client, env, sorted(state.raw_flags), end - since, end))

    async def stale(self, request: Request) -> Response:
        env = self._viewer(request)
        if isinstance(env, Response):
            return env
        unused = _duration(request, "unused", "30d")
        if isinstance(unused, Response):
            return unused
        end = time.time()
        return await self._read(env, lambda client, state: usage.stale_report(
            client, env, sorted(state.raw_flags), end - unused, end))

    async def experiment(self, request: Request) -> Response:
        env = self._viewer(request)
        if isinstance(env, Response):
            return env
        event = request.query_params.get("event")
        if not event:
            return errors.ofrep_error(400, "PARSE_ERROR", "event=NAME is required")
        key = request.path_params["key"]

        def read(client: Any, state: Any) -> Any:
            doc = state.document().to_json()
            doc.pop("$fractionalHash", None)
            return usage.experiment_result(client, env, key, event, doc,
                                           state.meta.get("fractional_hash", "v2"))

        return await self._read(env, read)


    async def live(self, request: Request) -> Response:
        env = self._viewer(request)
        if isinstance(env, Response):
            return env
        try:
            minutes = min(MAX_LIVE_MINUTES, max(1, int(request.query_params.get("minutes", 60))))
        except ValueError:
            return errors.ofrep_error(400, "PARSE_ERROR", "minutes: expected an integer")
        period = max(1.0, self.settings.insights_flush or 5.0)
        return StreamingResponse(self._live(request, env, minutes, period),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def _live(self, request: Request, env: str, minutes: int, period: float
                    ) -> AsyncIterator[bytes]:
        now = time.time()
        window = list(minutes_between(now - 60 * (minutes - 1), now))
        counts = await asyncio.to_thread(usage.minute_counts, self._redis(), env, window)
        yield _event("put", {"env": env, "minutes": counts})
        last = {m: counts[m] for m in window[-2:]}
        while not server_exiting() and not await request.is_disconnected():
            await asyncio.sleep(period)
            now = time.time()
            recent = [minute_of(now - 60), minute_of(now)]
            try:
                fresh = await asyncio.to_thread(usage.minute_counts, self._redis(), env, recent)
            except OSError:  # Redis away: nothing new to show; try again next period
                continue
            changed = {m: c for m, c in fresh.items() if last.get(m) != c}
            if changed:
                yield _event("minute", {"env": env, "minutes": changed})
                last = fresh


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _duration(request: Request, name: str, default: str) -> float | Response:
    try:
        return parse_duration(request.query_params.get(name, default))
    except ValueError as exc:
        return errors.ofrep_error(400, "PARSE_ERROR", f"{name}: {exc}")
