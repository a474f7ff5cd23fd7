"""The Starlette application: ``create_app(settings)`` wires store, sources, keys, auth, the
result cache, metrics and every HTTP surface; the lifespan starts the sources and stops them
cleanly. Other surfaces (streams) reach the shared parts through ``app.state.flagedge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.api import demo, errors
from proxy.api.admin import AdminApi
from proxy.api.admin_calls import AdminCalls
from proxy.api.admin_flags import FlagsApi
from proxy.api.admin_keys import KeysApi
from proxy.api.admin_release import ReleaseApi
from proxy.api.admin_requests import RequestsApi
from proxy.api.admin_rollouts import RolloutsApi
from proxy.api.admin_webhooks import WebhooksApi
from proxy.api.auth import Authenticator
from proxy.api.bulk_body import ofrep_item
from proxy.api.cache import ResultCache
from proxy.api.exposures import ExposuresApi
from proxy.api.fastpath import FastOfrep
from proxy.api.health import Health
from proxy.api.insights import InsightsApi
from proxy.api.metrics import Metrics, MetricsAccess
from proxy.api.ofrep import OfrepApi
from proxy.api.openapi import OpenApi
from proxy.api.streams import StreamsApi
from proxy.api.tokens import StreamTokens
from proxy.api.track import TrackApi
from proxy.config import Settings, load_settings
from proxy.evaluation.jsonlogic import semver
from proxy.evaluation.plan import memo_bytes
from proxy.insights.exposures import Flusher
from proxy.keys import KeyRing
from proxy.release.notify import Notifier, NotifyConfig
from proxy.release.worker import ReleaseWorker
from proxy.server import connections, gcpolicy, tasks
from proxy.sources.base import Source
from proxy.sources.file import FileSource
from proxy.sources.redis import RedisSource
from proxy.storage.url import async_client, sync_client
from proxy.store import Store
from proxy.streams.fanout import FanOut
from proxy.streams.history import ChangeLog, RedisHistory
from proxy.sync.metrics import SyncCollector, SyncStats
from proxy.sync.server import SyncServer
from proxy.ui.mount import mount as mount_ui
from proxy.ui.routes import UiRoutes

log = logging.getLogger("flagedge.app")

CORS_HEADERS = ["Content-Type", "Authorization", "X-API-Key", "If-None-Match", "Last-Event-ID"]
CORS_MAX_AGE = 86_400
METRICS_FLUSH_S = 1.0
# Longest the port stays closed waiting for the first load (see _first_loads): past the
# Redis connect timeout (2 s), so only a backend that hangs mid-load reaches it.
FIRST_LOAD_WAIT_S = 5.0


@dataclass
class Runtime:
    """Everything the HTTP surfaces share; one per worker process."""

    settings: Settings
    store: Store
    keyring: KeyRing
    tokens: StreamTokens
    auth: Authenticator
    cache: ResultCache
    metrics: Metrics
    openapi: OpenApi
    sources: list[Source] = field(default_factory=list)
    sync: SyncServer | None = None  # flagd sync over gRPC (settings.sync_port)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Any]] = field(default_factory=list)
    on_stopped: list[Callable[[], Any]] = field(default_factory=list)  # after the tasks

    def source_ready(self) -> bool:
        return any(source.ready for source in self.sources)


def _fallback_secret(settings: Settings) -> bytes:
    """Stream-token secret where Redis cannot supply ``flagedge:secret``: the configured
    ``stream_secret`` (FLAGEDGE_SECRET), else random for this process. Never derived from the
    keys file: that holds no secret (hashes an operator may hand around), so anyone with a
    copy could mint tokens. (``serve --workers N`` offline draws one random secret for all
    its workers and warns there.)"""
    if settings.stream_secret:
        return settings.stream_secret.encode()
    if settings.flags is not None and not settings.no_auth:
        log.warning("no stream_secret (FLAGEDGE_SECRET) set: stream tokens are signed with a "
                    "random secret of this process; they stop working when it restarts and "
                    "are refused by other replicas")
    return secrets.token_bytes(32)


def _build_sources(settings: Settings, store: Store, keyring: KeyRing) -> list[Source]:
    if settings.flags is not None:
        return [FileSource(settings.flags, store, env=settings.env)]
    return [RedisSource(settings.redis, store, keyring, bootstrap=settings.bootstrap,
                        env=settings.env, cluster=settings.cluster,
                        keys_refresh=settings.keys_refresh)]


async def _flush_metrics(rt: Runtime) -> None:
    directory = rt.settings.metrics_dir
    assert directory is not None
    while True:
        _write_snapshots(rt, directory)
        await asyncio.sleep(METRICS_FLUSH_S)


def _write_snapshots(rt: Runtime, directory: Path) -> None:
    with contextlib.suppress(OSError):
        rt.metrics.hot.write_snapshot(directory)
    if rt.sync is not None:
        with contextlib.suppress(OSError):
            rt.sync.stats.write_snapshot(directory)


def build_runtime(settings: Settings, store: Store | None = None,
                  keyring: KeyRing | None = None) -> Runtime:
    store = store or Store()
    keyring = keyring or KeyRing()
    if settings.keys is not None:
        count = keyring.load_file(settings.keys)
        log.info("loaded %d key hashes from %s", count, settings.keys)
    tokens = StreamTokens(_fallback_secret(settings), ttl=settings.stream_token_ttl)
    auth = Authenticator(keyring, tokens, no_auth=settings.no_auth, env=settings.env,
                         rate_limit=settings.rate_limit, rate_burst=settings.rate_burst)
    if settings.flags is not None and settings.keys is None and not settings.no_auth:
        log.warning("offline mode (--flags) without --keys or --no-auth: every request is 401")
    cache = ResultCache(settings.cache_size, settings.cache_bytes)
    metrics = Metrics(store, settings.metrics_dir, MetricsAccess(settings.metrics_key))
    # Insights collect only what a flush will write: not offline, not with flushing off.
    metrics.hot.insights = settings.insights_flush > 0 and settings.flags is None
    metrics.hot.cache = cache
    metrics.hot.held["results"] = lambda: cache.bytes
    metrics.hot.held["semver"] = semver.cached_bytes
    metrics.hot.held["plan_memos"] = lambda: sum(memo_bytes(store.get(e)) for e in store.envs())
    return Runtime(settings=settings, store=store, keyring=keyring, tokens=tokens, auth=auth,
                   cache=cache, metrics=metrics, openapi=OpenApi())


def create_app(settings: Settings, *, runtime: Runtime | None = None,
               start_sources: bool = True,
               extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The ASGI app. ``runtime`` lets tests hand in a pre-filled store; ``start_sources=False``
    serves whatever that store holds without connecting anywhere."""
    rt = runtime or build_runtime(settings)
    if start_sources and not rt.sources:
        rt.sources = _build_sources(settings, rt.store, rt.keyring)
        source = rt.sources[0]
        if isinstance(source, RedisSource) and not settings.stream_secret:
            # Every replica signs stream tokens with Redis's flagedge:secret once it is known,
            # and still accepts those signed with the one before a data loss.
            rt.tokens.provider = lambda: source.secret
            rt.tokens.previous = lambda: source.previous_secret

    ofrep = OfrepApi(settings, rt.store, rt.auth, rt.tokens, rt.metrics.hot, rt.cache,
                     rt.source_ready if start_sources else (lambda: True))
    health = _health(rt, settings, start_sources, public=True)
    admin = AdminApi(settings, rt.store, rt.auth, ofrep.source_ready)
    routes: list[BaseRoute] = [*ofrep.routes(), *admin.routes(), *health.routes(),
                               *rt.openapi.routes()]
    if not settings.admin_port:
        routes.append(Route("/metrics", rt.metrics.endpoint, methods=["GET"]))
    rt.metrics.registry.register(connections.ConnectionsCollector())  # type: ignore[arg-type]
    if settings.sync_port and rt.sync is None:
        hot = rt.metrics.hot
        rt.sync = SyncServer(settings, rt.store, rt.keyring, SyncStats(),
                             on_consumer=lambda env, key_id: hot.note_usage(env, "consumers",
                                                                            key_id))
        rt.metrics.registry.register(  # type: ignore[arg-type]
            SyncCollector(rt.sync.stats, settings.metrics_dir))
    routes += _surfaces(rt)
    admin_routes = _admin_routes(rt)
    if not settings.admin_port:
        routes += admin_routes
    routes += extra_routes or []

    app = FlagedgeApp(routes=routes, middleware=_middleware(settings),
                    lifespan=_lifespan(rt, settings),
                    exception_handlers={404: _not_found, 405: _not_allowed,
                                        Exception: _internal_error})
    app.state.flagedge = rt
    admin_app = _admin_app(rt, settings, start_sources, admin_routes) if settings.admin_port else None

    def front(stack: ASGIApp) -> ASGIApp:
        # The OFREP evaluate fast path; it times every request (through the full stack
        # otherwise), CORS preflights and errors included.
        fast = FastOfrep(stack, metrics=rt.metrics, ofrep=ofrep, cors=bool(settings.cors_origins))
        if admin_app is None:
            return fast
        # Outermost: the admin port's requests see nothing else.
        return AdminListener(fast, port=settings.admin_port, admin=admin_app)

    app.front = front
    return app


class FlagedgeApp(Starlette):
    """Starlette with ``front`` layers outside its error middleware (``build_middleware_stack``
    puts ServerErrorMiddleware outermost): the OFREP fast path answers there, skipping that
    layer's per-request wrapper (proxy.api.fastpath handles its own errors alike)."""

    front: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self.front(stack) if self.front is not None else stack


def _health(rt: Runtime, settings: Settings, start_sources: bool, *, public: bool) -> Health:
    """/healthz and /readyz; with an admin port, the public one lists no environments."""
    access = rt.metrics.access
    return Health(rt.store, rt.source_ready if start_sources else (lambda: True),
                  source="rules file" if settings.flags is not None else "redis",
                  access=access, details=(lambda _r: False) if public and settings.admin_port
                  else access.allows)


def _admin_app(rt: Runtime, settings: Settings, start_sources: bool,
               routes: list[BaseRoute]) -> Starlette:
    health = _health(rt, settings, start_sources, public=False)
    return Starlette(routes=[Route("/metrics", rt.metrics.endpoint, methods=["GET"]),
                             *health.routes(), *routes],
                     exception_handlers={404: _not_found, 405: _not_allowed,
                                         Exception: _internal_error})


class AdminListener:
    """Requests that came in on ``admin_port`` (uvicorn puts the local address of the
    connection in ``scope["server"]``; a client cannot choose it) go to the admin app; all
    else, lifespan included, to the main app. ``serve`` binds both ports (commands/serve.py)."""

    def __init__(self, app: ASGIApp, port: int, admin: ASGIApp):
        self.app, self.port, self.admin = app, port, admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if server is not None and server[1] == self.port and scope["type"] == "http":
            await self.admin(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _lifespan(rt: Runtime, settings: Settings
              ) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        _start(rt, settings)
        await _first_loads(rt.sources, FIRST_LOAD_WAIT_S)
        if rt.sync is not None:  # flagd sync beside HTTP; a port it cannot bind fails startup
            await rt.sync.start()
        try:
            yield
        finally:
            await _stop(rt, settings)

    return lifespan


async def _first_loads(sources: list[Source], limit_s: float) -> None:
    """Return once every source has tried its first load (rules and keys in, or its fault
    reported), or after ``limit_s``. uvicorn binds the port after the lifespan's startup, so
    a client reconnecting to a restarted process (a browser's EventSource, a provider) finds
    the rules there instead of a 503 "not loaded yet" for the few hundred ms a load takes.
    A Redis that refuses settles at once (the bootstrap file, if any, loaded); the bound is
    for one that neither answers nor refuses, which must not keep the port closed."""
    waits = [source.settled.wait() for source in sources]
    if not waits:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*waits), limit_s)
    except TimeoutError:
        log.warning("listening before the first load finished (%.0f s): requests get 503 "
                    "until it does", limit_s)


def _start(rt: Runtime, settings: Settings) -> None:
    """The background work of a serving worker: sources, metrics files, the collector clock."""
    for source in rt.sources:
        rt.tasks.append(asyncio.create_task(source.run(), name=f"source:{type(source).__name__}"))
    if settings.metrics_dir is not None:
        rt.tasks.append(asyncio.create_task(_flush_metrics(rt), name="metrics-flush"))
    _start_insights(rt, settings)
    _start_release_worker(rt, settings)
    _start_notifier(rt, settings)
    gcpolicy.settle()  # what startup allocated stays out of every later pass
    if settings.gc_period > 0:  # collect on a clock, not inside requests (proxy/server/gcpolicy.py)
        rt.tasks.append(asyncio.create_task(
            gcpolicy.collect_on_clock(settings.gc_period), name="gc-clock"))
    else:
        gcpolicy.automatic()
    log.info("flagedge serving (%s)", "offline file " + str(settings.flags)
             if settings.flags else "redis")


async def _stop(rt: Runtime, settings: Settings) -> None:
    """Sync streams and shutdown hooks first (streams say goodbye: UNAVAILABLE, SSE's last
    frames), then tasks, sources, the last metrics."""
    if rt.sync is not None:
        with contextlib.suppress(Exception):
            await rt.sync.stop()
    for hook in rt.on_shutdown:
        with contextlib.suppress(Exception):
            result = hook()
            if asyncio.iscoroutine(result):
                await result
    await tasks.cancel_all(rt.tasks)  # again and again: a cancel can be lost (server/tasks.py)
    rt.tasks.clear()
    for hook in rt.on_stopped:
        with contextlib.suppress(Exception):
            await hook()
    for source in rt.sources:
        with contextlib.suppress(Exception):
            await source.close()
    if settings.metrics_dir is not None:
        _write_snapshots(rt, settings.metrics_dir)
    log.info("flagedge stopped")


def _start_insights(rt: Runtime, settings: Settings) -> None:
    """Each worker writes its exposure counts to Redis (DESIGN §11); not offline."""
    if not settings.insights_flush or not any(isinstance(s, RedisSource) for s in rt.sources):
        return
    client = async_client(settings.redis, cluster=settings.cluster)
    flusher = Flusher(client, rt.metrics.hot, rt.store, days=settings.insights_days,
                      on_new_day=rt.cache.drop_raw)
    rt.metrics.hot.insights_stats = flusher.stats
    rt.tasks.append(asyncio.create_task(flusher.run(settings.insights_flush),
                                        name="insights-flush"))
    rt.on_stopped.append(client.aclose)


def _start_release_worker(rt: Runtime, settings: Settings) -> None:
    """Each worker process applies due change requests (DESIGN §10); not offline, not with
    release_worker off."""
    if not settings.release_worker or not any(isinstance(s, RedisSource) for s in rt.sources):
        return
    # Short timeouts: a tick runs in a worker thread that a shutdown must wait for (the
    # interpreter joins it), so a stalled Redis call must not hold a stop for long.
    client = sync_client(settings.redis, cluster=settings.cluster, socket_connect_timeout=2,
                         socket_timeout=3)
    rt.tasks.append(asyncio.create_task(ReleaseWorker(client).run(), name="release-worker"))

    async def close() -> None:
        client.close()

    rt.on_stopped.append(close)


def _start_notifier(rt: Runtime, settings: Settings) -> None:
    """Each worker is a consumer delivering the outbox to webhooks (DESIGN §10); not
    offline."""
    if not any(isinstance(s, RedisSource) for s in rt.sources):
        return
    client = async_client(settings.redis, cluster=settings.cluster)
    notifier = Notifier(client, NotifyConfig(attempts=settings.notify_attempts,
                                             backoff=settings.notify_backoff,
                                             claim_idle=settings.notify_takeover,
                                             ui_url=settings.ui_url))
    rt.tasks.append(asyncio.create_task(notifier.run(), name="notify"))
    rt.on_stopped.append(client.aclose)


def _middleware(settings: Settings) -> list[Middleware]:
    if not settings.cors_origins:
        return []
    return [Middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"], allow_headers=CORS_HEADERS,
        expose_headers=["ETag"], max_age=CORS_MAX_AGE)]


async def _internal_error(request: Request, _exc: Exception) -> Response:
    """Last resort (Starlette's ServerErrorMiddleware logs the traceback): JSON, not text."""
    log.error("unhandled error on %s", request.url.path)
    return errors.ofrep_error(500, "GENERAL", "internal error")


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return errors.ofrep_error(404, "NOT_FOUND", "no such endpoint")


async def _not_allowed(_request: Request, _exc: Exception) -> Response:
    return errors.ofrep_error(405, "METHOD_NOT_ALLOWED", "method not allowed here")


def _surfaces(rt: Runtime) -> list[BaseRoute]:
    """Routes of the other HTTP surfaces (one line each; they read ``rt``): the streams, and
    the demo page at /demo/ (serve --demo)."""
    exposures = ExposuresApi(rt.settings, rt.store, rt.auth, rt.metrics.hot)
    track = TrackApi(rt.settings, rt.auth, rt.metrics.hot)
    return [*_streams(rt), *exposures.routes(), *track.routes(),
            *(demo.mount(rt) if rt.settings.demo else [])]


def _admin_routes(rt: Runtime) -> list[BaseRoute]:
    """The admin API's release-control (DESIGN §10) and insights (§11) routes and the UI
    (§12): on ``admin_port`` when set, else on the main port. Their Redis clients are closed
    after the background tasks."""
    calls = AdminCalls(rt.settings, rt.auth, rt.keyring)
    rt.on_stopped.append(calls.close)
    insights = InsightsApi(rt.settings, rt.auth, rt.keyring)
    ui = UiRoutes(rt.settings, rt.auth, rt.keyring, rt.store, rt.tokens, calls)  # §12
    rt.on_stopped.append(ui.close)
    return [*insights.routes(), *ReleaseApi(calls).routes(), *FlagsApi(calls).routes(),
            *RequestsApi(calls).routes(), *RolloutsApi(calls).routes(),
            *WebhooksApi(calls).routes(), *KeysApi(calls).routes(), *mount_ui(ui)]


def _streams(rt: Runtime) -> list[BaseRoute]:
    """SSE streams + /v1/rules: the fan-out, with the Redis change log for resumes unless the
    rules come from a file, started now and stopped (then the client closed) by the lifespan's
    shutdown hooks."""
    settings = rt.settings
    redis = None
    if settings.flags is None and settings.redis:
        # Resume replay (XREVRANGE) only; connects lazily, on the first resume that needs it.
        redis = async_client(settings.redis, cluster=settings.cluster)
    fanout = FanOut(rt.store, ChangeLog(), render=ofrep_item, stats=rt.metrics.hot,
                    history=RedisHistory(redis) if redis is not None else None,
                    max_per_key=settings.sse_max_per_key,
                    max_total=settings.sse_max_connections,
                    max_per_address=settings.sse_max_per_address,
                    coalesce_s=settings.sse_coalesce_ms / 1000,
                    boundary_jitter=settings.boundary_jitter)
    streams = StreamsApi(rt.store, rt.auth, fanout, settings=settings, keyring=rt.keyring,
                         metrics=rt.metrics)
    streams.start()
    rt.on_shutdown.append(streams.stop)
    if redis is not None:
        rt.on_shutdown.append(redis.aclose)
    return list(streams.routes())


def factory() -> Starlette:
    """uvicorn ``--factory`` entry for worker processes: ``flagedge serve --workers N`` writes
    the settings as JSON to a 0600 file and names it in FLAGEDGE__SETTINGS_FILE (secrets stay
    out of the workers' environment)."""
    path = os.environ.get("FLAGEDGE__SETTINGS_FILE")
    if path:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
        settings = load_settings(cli=data, environ={})
    else:
        settings = load_settings()
    connections.configure(settings)  # this worker's connection limits and open-file limit
    return create_app(settings)
