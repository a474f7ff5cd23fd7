"""``POST /v1/track`` (client keys, CORS): outcomes for experiments, OpenFeature ``track``
over HTTP, shaped after the open OFREP tracking proposal (open-feature/protocol#71).

Body: a JSON array of events, or ``{"events": [...]}``; each ``{"event": NAME,
"targetingKey": KEY | "context": {"targetingKey": KEY, ...}, "value"?: number, "at"?: any}``
(``at`` is accepted and ignored: events count when they arrive). At most ``MAX_EVENTS``
per request. Answers 202 ``{"accepted": N}``, or 400 naming the first bad event (nothing is
kept), or 429 when one client address sends faster than ``track_rate`` requests/s (per
worker): a client key ships in every browser, so anyone can send events; the limit bounds
what one address can forge, and the README says so.

Events are held in memory and attributed at the next insights flush to the user's stored
assignment in each running experiment (proxy.insights.experiments)."""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.auth import Authenticator, TokenBucket
from proxy.api.client_address import limit_key
from proxy.api.context import BadBatch, json_batch, request_body
from proxy.api.metrics import HotMetrics
from proxy.config import Settings

MAX_EVENTS = 100
MAX_NAME = 128
MAX_ADDRESSES = 100_000  # per-address buckets kept; past it they are forgotten (bounded)
Event = tuple[str, str, float | None]


class BadEvents(ValueError):
    pass


class TrackApi:
    def __init__(self, settings: Settings, auth: Authenticator, hot: HotMetrics):
        self.settings, self.auth, self.hot = settings, auth, hot
        self._buckets: dict[str, TokenBucket] = {}

    def routes(self) -> list[Route]:
        return [Route("/v1/track", self.track, methods=["POST"])]

    async def track(self, request: Request) -> Response:
        principal = self.auth.authorize(request, "client")
        if isinstance(principal, Response):
            return principal
        if not self.hot.insights:
            return errors.unavailable("tracking needs insights: a Redis source and "
                                      "insights_flush > 0")
        wait = self._throttle(limit_key(request.scope))
        if wait:
            return errors.too_many_requests(wait)
        body = await request_body(request, self.settings.body_limit)
        if isinstance(body, Response):
            return body
        try:
            events = parse_events(body)
        except BadEvents as exc:
            return errors.parse_error(str(exc))
        accepted = sum(self.hot.track(principal.env, name, key, value)
                       for name, key, value in events)
        return errors.json_response({"accepted": accepted}, status=202)

    def _throttle(self, address: str) -> int:
        rate = self.settings.track_rate
        if not rate:
            return 0
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                self._buckets.clear()
            bucket = self._buckets[address] = TokenBucket(rate, max(1.0, 4 * rate))
        return bucket.take(time.monotonic())


def parse_events(body: bytes) -> list[Event]:
    """(event, targetingKey, value) of each event; ``BadEvents`` names the first problem."""
    try:
        data, path = json_batch(body, "events", MAX_EVENTS, nonempty=True)
    except BadBatch as exc:
        raise BadEvents(str(exc)) from None
    return [_event(raw, f"{path}[{i}]") for i, raw in enumerate(data)]


def _event(raw: Any, path: str) -> Event:
    if not isinstance(raw, dict):
        raise BadEvents(f"{path}: expected an object")
    name = raw.get("event")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise BadEvents(f"{path}.event: expected a name of 1 to {MAX_NAME} characters")
    key = raw.get("targetingKey")
    if key is None and isinstance(raw.get("context"), dict):
        key = raw["context"].get("targetingKey")
    if not isinstance(key, str) or not key:
        raise BadEvents(f"{path}: a targetingKey (or context.targetingKey) is required")
    value = raw.get("value")
    if value is not None and (value.__class__ not in (int, float) or not math.isfinite(value)):
        raise BadEvents(f"{path}.value: expected a finite number")
    return name, key, None if value is None else float(value)
