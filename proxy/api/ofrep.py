"""OFREP evaluation endpoints: single flag and bulk (ETag/304, result cache, eventStreams).

Hot path (DESIGN §6): read body -> orjson parse -> store.get -> cache lookup, or run the
compiled closures -> serialize once (``bulk_body``). No Redis round trip and no locks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from proxy.api import errors
from proxy.api.auth import Authenticator, Principal, header_map
from proxy.api.bulk_body import BulkBodies, exposure, ofrep_item
from proxy.api.cache import CachedResult, ResultCache
from proxy.api.context import BadContext, check_context, parse_request, read_body
from proxy.api.metrics import HotMetrics
from proxy.api.tokens import StreamTokens
from proxy.api.transport import send_ok
from proxy.config import Settings
from proxy.evaluation.engine import evaluate, evaluate_dynamic
from proxy.evaluation.plan import derive_plan
from proxy.model import Change, ErrorCode, EvaluationResult, FlagSet, id_version
from proxy.store import CATCH_UP_S, Store
from proxy.streams.fanout import yield_to_requests

EVENTS_PATH = "/ofrep/v1/events"
# Contexts larger than this are evaluated, not cached: they rarely repeat, and each would take
# a large share of the cache's byte budget (``cache_bytes``).
MAX_CACHED_CONTEXT = 4096
REAP_SLICE_S = 0.0002  # how long the cache's reaper runs before requests go first
_SORT = orjson.OPT_SORT_KEYS
_NO_RULES = "no rules loaded yet: the rules source is not reachable (retry shortly)"
_INVALID_RULES = "no rules loaded: the rules file is invalid (its problems are in the log)"


def _etag_param(text: str | None) -> str | None:
    """``flagConfigEtag``: the state id of our notification (a bare version from older
    servers), possibly quoted or weak-prefixed."""
    if not text:
        return None
    return text.strip().removeprefix("W/").strip('"')[:64] or None


def _float_param(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _etag_matches(header: str, etag: str) -> bool:
    if header == etag:
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class _Asgi:
    """A handler ``(scope, receive, send) -> status`` as a Starlette route's ASGI endpoint (a
    bound method would be taken for a request/response endpoint)."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[int]]):
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def _see_user(hot: HotMetrics, env: str, context: dict[str, Any]) -> None:
    if not hot.insights:
        return
    key = context.get("targetingKey")
    if key.__class__ is str and key:
        hot.see_user(env, key)


def _record_assignments(hot: HotMetrics, env: str, flag_set: FlagSet, context: dict[str, Any],
                        results: Iterable[EvaluationResult]) -> None:
    """Experiment split assignments among ``results`` (DESIGN §11). Recorded when evaluated:
    an answer from the result cache is the same user's same assignment."""
    key = context.get("targetingKey")
    if not hot.insights or key.__class__ is not str or not key:
        return
    for r in results:
        if r.assigned:
            revision = flag_set.flags[r.key].experiment
            if revision is not None and r.variant is not None:
                hot.assign(env, r.key, revision, key, r.variant)


class OfrepApi:
    def __init__(self, settings: Settings, store: Store, auth: Authenticator, tokens: StreamTokens,
                 metrics: HotMetrics, cache: ResultCache, source_ready: Callable[[], bool]):
        self.settings = settings
        self.store = store
        self.auth = auth
        self.tokens = tokens
        self.hot = metrics
        self.cache = cache
        self.source_ready = source_ready
        self.bodies = BulkBodies(metrics, settings.bodies_bytes)
        self._streams_memo: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._flag_sets: dict[str, FlagSet] = {}  # the last published per environment
        self._reaper: asyncio.Task[None] | None = None
        store.subscribe(self._on_change)

    def _on_change(self, change: Change, flag_set: FlagSet) -> None:
        removed = self.store.get(change.env) is None
        # Its older entries can never hit again: freed in slices, requests first.
        self.cache.retire(change.env, None if removed else (flag_set.version, flag_set.state_id))
        self._reap()
        if removed:
            self.bodies.drop_env(change.env)
            self._flag_sets.pop(change.env, None)
            return
        previous = self._flag_sets.get(change.env)
        self._flag_sets[change.env] = flag_set
        if previous is not None:
            # At 100 changes/s nearly every bulk request meets a new version: what changed
            # is patched into the previous plan (its memos kept), not planned again.
            derive_plan(previous, flag_set)

    def routes(self) -> list[Route]:
        return [
            Route("/ofrep/v1/evaluate/flags", _Asgi(self.bulk), methods=["POST"]),
            Route("/ofrep/v1/evaluate/flags/{key:path}", self.single, methods=["POST"]),
            Route("/ofrep/v1/configuration", self.configuration, methods=["GET"]),
        ]

    # -- GET /ofrep/v1/configuration (OFREP extension) -----------------------------------
    async def configuration(self, request: Request) -> Response:
        principal = self.auth.authorize(request, "client")
        if isinstance(principal, Response):
            return principal
        return errors.json_response({
            "name": "flagedge",
            "capabilities": {
                "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 1000}},
                "flagEvaluation": {"supportedTypes": ["int", "float", "string", "boolean",
                                                     "object"]},
            },
        })

    def _reap(self) -> None:
        """Free retired cache entries from a task of their own (at once outside a loop)."""
        if self._reaper is not None and not self._reaper.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside a loop (tools, tests)
            while self.cache.reap(math.inf):
                pass
            return
        self._reaper = loop.create_task(self._reap_slices(), name="cache-reaper")

    async def _reap_slices(self) -> None:
        while self.cache.reap(REAP_SLICE_S):
            await yield_to_requests()

    # -- shared steps ----------------------------------------------------------------------
    async def _begin(self, headers: dict[bytes, bytes], receive: Receive
                     ) -> tuple[Principal, FlagSet, bytes] | Response:
        """Caller, rules and the raw body (parsed by ``_context``: a cache hit skips that)."""
        principal = self.auth.client(headers.get(b"authorization"))
        if principal is None:
            principal = self.auth.authorize(None, "client", headers=headers)
            if isinstance(principal, Response):
                return principal
        body = await read_body(receive, self.settings.body_limit, headers.get(b"content-length"))
        if isinstance(body, Response):
            return body
        flag_set = self.store.get(principal.env)
        if flag_set is None:
            if not self.source_ready():
                return errors.unavailable(_INVALID_RULES if self.store.invalid(principal.env)
                                          else _NO_RULES)
            flag_set = FlagSet(flags={})  # a known environment with nothing published yet
        return principal, flag_set, body

    @staticmethod
    def _context(body: bytes, headers: dict[bytes, bytes], key: str | None
                 ) -> dict[str, Any] | Response:
        try:
            return parse_request(body, headers.get(b"content-type"))
        except BadContext as exc:
            return errors.ofrep_error(400, exc.code, exc.details, key=key)

    def _check(self, context: dict[str, Any], key: str | None) -> Response | None:
        try:
            check_context(context, self.settings.max_context_depth, self.settings.max_context_items)
        except BadContext as exc:
            return errors.ofrep_error(400, exc.code, exc.details, key=key)
        return None

    # -- POST /ofrep/v1/evaluate/flags/{key} ---------------------------------------------
    async def single(self, request: Request) -> Response:
        key = request.path_params["key"]
        headers = header_map(request)
        begun = await self._begin(headers, request.receive)
        if isinstance(begun, Response):
            return begun
        principal, flag_set, body = begun
        context = self._context(body, headers, key)
        if isinstance(context, Response):
            return context
        bad = self._check(context, key)
        if bad is not None:
            return bad
        result = evaluate(flag_set, key, context)
        _see_user(self.hot, principal.env, context)
        if result.assigned:
            _record_assignments(self.hot, principal.env, flag_set, context, (result,))
        if result.error_code is not None:
            status = 404 if result.error_code is ErrorCode.FLAG_NOT_FOUND else 400
            code = result.error_code
            if code not in (ErrorCode.FLAG_NOT_FOUND, ErrorCode.PARSE_ERROR,
                            ErrorCode.INVALID_CONTEXT):
                code = ErrorCode.GENERAL  # OFREP's 400 codes; the rest are rule failures
            return errors.ofrep_error(status, code, result.error_details or code.value, key=key)
        self.hot.count_exposures(principal.env, (exposure(result),))
        item = ofrep_item(result, flag_set.flags.get(key))
        return errors.JsonBytes(orjson.dumps(item))

    # -- POST /ofrep/v1/evaluate/flags ---------------------------------------------------
    async def bulk(self, scope: Scope, receive: Receive, send: Send, direct: bool = False
                   ) -> int:
        """A raw ASGI handler (the hot path: no Request or Response objects on success);
        returns the status it sent. ``direct``: no middleware wraps ``send``, so a 200 may
        be written to the connection at once (``transport.send_ok``)."""
        answer = await self._bulk(scope, receive, dict(scope["headers"]))
        if answer.__class__ is not tuple:
            await answer(scope, receive, send)  # type: ignore[operator]
            return answer.status_code  # type: ignore[union-attr]
        body, etag = answer  # type: ignore[misc]
        if direct and send_ok(scope, b"content-length: %d\r\ncontent-type: application/json"
                              b"\r\netag: %b\r\n" % (len(body), etag), body):
            return 200
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"%d" % len(body)), (b"content-type", b"application/json"),
            (b"etag", etag)]})
        await send({"type": "http.response.body", "body": body})
        return 200

    async def _bulk(self, scope: Scope, receive: Receive, headers: dict[bytes, bytes]
                    ) -> tuple[bytes, bytes] | Response:
        """The body and ETag of a 200, or another response."""
        begun = await self._begin(headers, receive)
        if isinstance(begun, Response):
            return begun
        principal, flag_set, body = begun
        if scope["query_string"]:
            flag_set = await self._catch_up(QueryParams(scope["query_string"]), principal.env,
                                            flag_set)
        entry = self._entry(principal.env, flag_set, body, headers.get(b"content-type"))
        if isinstance(entry, Response):
            return entry
        streams, window = self._event_streams(scope, principal)
        etag = entry.etag(window)
        inm = headers.get(b"if-none-match")
        if inm is not None and _etag_matches(inm.decode("latin-1"), etag.decode()):
            self.hot.count_entry(entry)  # the client shows the results it confirms (§11)
            return Response(status_code=304, headers={"ETag": etag.decode()})
        self.hot.count_entry(entry)
        return entry.body(streams), etag  # one join: the shared parts, the entry's, the tail

    def _entry(self, env: str, flag_set: FlagSet, body: bytes, content_type: bytes | None
               ) -> CachedResult | Response:
        """The cached or freshly evaluated result of one bulk request."""
        boundaries = flag_set.boundaries
        cacheable = boundaries is not None
        if not cacheable:  # the clock is read other than compared with literal times
            self.cache.bypassed += 1
        # Rules with literal time thresholds: an entry holds within its interval only (the
        # interval is part of its state, so an entry is never found after the next boundary).
        state = flag_set.state_id if not boundaries else flag_set.stream_id(time.time())
        # Clients repeat a user's context byte for byte: a hit on the raw body skips parsing and
        # canonicalising it. The content type is part of the key (it decides a 400).
        raw_key = ((env, state, flag_set.version, content_type, body)
                   if cacheable and len(body) <= MAX_CACHED_CONTEXT else None)
        entry = self.cache.get_raw(raw_key) if raw_key is not None else None
        if entry is not None:
            return entry
        try:
            context = parse_request(body, content_type)
        except BadContext as exc:
            return errors.ofrep_error(400, exc.code, exc.details)
        bad = self._check(context, None)  # (an answer from the cache must not skip it)
        if bad is not None:
            return bad
        _see_user(self.hot, env, context)
        # Keyed on what the rules read: attributes no rule reads (request ids, timestamps,
        # user agents) cannot change a result, and must not make every context unique.
        reads = flag_set.reads
        keyed = context if reads is None else {k: v for k, v in context.items() if k in reads}
        canonical = orjson.dumps(keyed, option=_SORT)  # (parsed JSON, depth checked above)
        if cacheable and len(canonical) > MAX_CACHED_CONTEXT:
            cacheable = False
            self.cache.bypassed += 1
        cache_key = (env, state, flag_set.version, canonical)
        entry = self.cache.get(cache_key) if cacheable else None
        if entry is None:
            entry = self._evaluate_all(env, flag_set, context)
            # (a boundary passed while evaluating: the results may be the next interval's)
            if cacheable and (not boundaries or flag_set.stream_id(time.time()) == state):
                self.cache.offer(cache_key, entry)  # on its second sight
        elif raw_key is not None and len(keyed) == len(context):
            # Seen twice: worth an alias (aliasing every never-repeated context would
            # double the cache work of unique traffic for nothing; a body with attributes no
            # rule reads rarely repeats byte for byte).
            self.cache.put_raw(raw_key, entry)
        return entry

    def _evaluate_all(self, env: str, flag_set: FlagSet, context: dict[str, Any]) -> CachedResult:
        plan, results = evaluate_dynamic(flag_set, context)
        if plan is None:  # an INVALID_CONTEXT error for every flag
            return self.bodies.generic(env, flag_set, results)
        if flag_set.experiments:
            _record_assignments(self.hot, env, flag_set, context, results)
        return self.bodies.entry(env, flag_set, plan, results)

    def _event_streams(self, scope: Scope, principal: Principal) -> tuple[bytes, int | None]:
        """The body's tail, ``,"eventStreams":[...]}``: the events stream URL with a token for it. Every kind of
        key gets one: the token opens that stream only (change notifications, no flag data;
        proxy.api.tokens), which a server-side OFREP provider may follow without headers."""
        window = None if self.auth.no_auth else self.tokens.window()
        root = scope.get("root_path", "")
        memo_key = (principal.env, principal.kind, principal.key_id, window, root)
        cached = self._streams_memo.get(memo_key)
        if cached is not None and self.tokens.secret is cached[1]:
            return cached[0], window
        uri = root + EVENTS_PATH
        if window is not None:
            token = self.tokens.issue(principal.env, principal.kind, principal.key_id, window)
            uri += "?token=" + quote(token, safe="")
        streams = b',"eventStreams":' + orjson.dumps([{
            "type": "sse", "endpoint": {"requestUri": uri},
            "inactivityDelaySec": self.settings.inactivity_delay}]) + b"}"
        if len(self._streams_memo) > 10_000:
            self._streams_memo.clear()
        self._streams_memo[memo_key] = (streams, self.tokens.secret)
        return streams, window

    async def _catch_up(self, params: QueryParams, env: str, flag_set: FlagSet) -> FlagSet:
        """OFREP ADR-0008 re-fetch after a change notification: if the client names a rules
        state (or write time) we have not served yet, wait briefly for our store."""
        etag = _etag_param(params.get("flagConfigEtag") or params.get("sseEtag"))
        modified = _float_param(params.get("flagConfigLastModified")
                                or params.get("sseLastModified"))
        if etag is None or id_version(etag) is None:
            if modified is not None and flag_set.updated_at and modified > flag_set.updated_at:
                await self.store.wait_for_version(env, flag_set.version + 1, CATCH_UP_S)
        else:
            await self.store.catch_up(env, etag)
        return self.store.get(env) or flag_set
