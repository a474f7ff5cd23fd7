"""``POST /v1/exposures`` (server keys): evaluations done in-process, reported in batches so
insights count them with the edge's own (DESIGN §11). ``FlagedgeProvider``'s exposure hook
sends them; anything else may too.

Body: ``{"exposures": [{"flag", "variant", "reason", "count"}...]}`` or the bare array. The
flag must exist in the key's environment (others are ignored and counted as such in the
answer: a provider a version behind may report a deleted flag); ``variant`` is null for an
error or a disabled flag; ``reason`` is one of flagd's; ``count`` 1 to 1,000,000. Answers
202 ``{"accepted": N, "ignored": M}``, or 400 naming the first bad item and counting
nothing (all or nothing)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.auth import Authenticator
from proxy.api.context import BadBatch, json_batch, request_body
from proxy.api.metrics import HotMetrics
from proxy.config import Settings
from proxy.model import Reason
from proxy.store import Store

MAX_ITEMS = 1_000
MAX_COUNT = 1_000_000
REASONS = frozenset(r.value for r in Reason)
Item = tuple[str, str | None, str, int]


class BadReport(ValueError):
    pass


class ExposuresApi:
    def __init__(self, settings: Settings, store: Store, auth: Authenticator, hot: HotMetrics):
        self.settings, self.store, self.auth, self.hot = settings, store, auth, hot

    def routes(self) -> list[Route]:
        return [Route("/v1/exposures", self.report, methods=["POST"])]

    async def report(self, request: Request) -> Response:
        principal = self.auth.authorize(request, "server")
        if isinstance(principal, Response):
            return principal
        body = await request_body(request, self.settings.body_limit)
        if isinstance(body, Response):
            return body
        try:
            items = parse_report(body)
        except BadReport as exc:
            return errors.parse_error(str(exc))
        flag_set = self.store.get(principal.env)
        known = flag_set.flags if flag_set is not None else {}
        accepted = ignored = 0
        for flag, variant, reason, count in items:
            if flag in known:
                self.hot.count_reported(principal.env, flag, variant, reason, count)
                accepted += count
            else:
                ignored += count
        self.hot.note_usage(principal.env, "reporters", principal.key_id)
        return errors.json_response({"accepted": accepted, "ignored": ignored}, status=202)


def parse_report(body: bytes) -> list[Item]:
    """The report's items; ``BadReport`` names the first problem and its JSON path."""
    try:
        data, path = json_batch(body, "exposures", MAX_ITEMS)
    except BadBatch as exc:
        raise BadReport(str(exc)) from None
    return [_item(raw, f"{path}[{i}]") for i, raw in enumerate(data)]


def _item(raw: Any, path: str) -> Item:
    if not isinstance(raw, dict):
        raise BadReport(f"{path}: expected an object")
    flag, variant = raw.get("flag"), raw.get("variant")
    reason, count = raw.get("reason"), raw.get("count", 1)
    if not isinstance(flag, str) or not flag:
        raise BadReport(f"{path}.flag: expected a flag key")
    if variant is not None and not isinstance(variant, str):
        raise BadReport(f"{path}.variant: expected a string or null")
    if reason not in REASONS:
        raise BadReport(f"{path}.reason: expected one of {', '.join(sorted(REASONS))}")
    if count.__class__ is not int or not 1 <= count <= MAX_COUNT:
        raise BadReport(f"{path}.count: expected an integer from 1 to {MAX_COUNT}")
    return flag, variant, reason, count
