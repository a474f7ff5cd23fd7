"""The Starlette application: ``create_app(settings)`` wires store, sources, keys, auth, the
result cache, metrics and every HTTP surface; the lifespan starts the sources and stops them
cleanly. Other surfaces (streams) reach the shared parts through ``app.state.flagedge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api import demo, errors
from proxy.api.admin import AdminApi
from proxy.api.auth import Authenticator
from proxy.api.bulk_body import ofrep_item
from proxy.api.cache import ResultCache
from proxy.api.fastpath import FastOfrep
from proxy.api.health import Health
from proxy.api.metrics import Metrics
from proxy.api.ofrep import OfrepApi
from proxy.api.openapi import OpenApi
from proxy.api.streams import StreamsApi
from proxy.api.tokens import StreamTokens
from proxy.config import Settings, load_settings
from proxy.evaluation.jsonlogic import semver
from proxy.keys import KeyRing
from proxy.server import gcpolicy
from proxy.sources.base import Source
from proxy.sources.file import FileSource
from proxy.sources.redis import RedisSource
from proxy.storage.url import async_client
from proxy.store import Store
from proxy.streams.fanout import FanOut
from proxy.streams.history import ChangeLog, RedisHistory

log = logging.getLogger("flagedge.app")

CORS_HEADERS = ["Content-Type", "Authorization", "X-API-Key", "If-None-Match", "Last-Event-ID"]
CORS_MAX_AGE = 86_400
METRICS_FLUSH_S = 1.0


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
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Any]] = field(default_factory=list)

    def source_ready(self) -> bool:
        return any(source.ready for source in self.sources)


def _fallback_secret(settings: Settings) -> bytes:
    """Stream-token secret where Redis cannot supply ``flagedge:secret``: the configured one,
    else one derived from the keys file (same on every worker/replica given the same file),
    else random (tokens then work on this process only)."""
    if settings.stream_secret:
        return settings.stream_secret.encode()
    if settings.keys is not None and settings.keys.exists():
        return hashlib.sha256(b"flagedge-stream-token\0" + settings.keys.read_bytes()).digest()
    return secrets.token_bytes(32)


def _build_sources(settings: Settings, store: Store, keyring: KeyRing) -> list[Source]:
    if settings.flags is not None:
        return [FileSource(settings.flags, store, env=settings.env)]
    return [RedisSource(settings.redis, store, keyring, bootstrap=settings.bootstrap,
                        env=settings.env, cluster=settings.cluster)]


async def _flush_metrics(rt: Runtime) -> None:
    directory = rt.settings.metrics_dir
    assert directory is not None
    while True:
        with contextlib.suppress(OSError):
            rt.metrics.hot.write_snapshot(directory)
        await asyncio.sleep(METRICS_FLUSH_S)


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
    metrics = Metrics(store, settings.metrics_dir)
    metrics.hot.cache = cache
    metrics.hot.held["results"] = lambda: cache.bytes
    metrics.hot.held["semver"] = semver.cached_bytes
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
        if settings.flags is None and not settings.stream_secret:
            # Every replica signs stream tokens with Redis's flagedge:secret once it is known.
            source = rt.sources[0]
            rt.tokens.provider = lambda: source.secret

    ofrep = OfrepApi(settings, rt.store, rt.auth, rt.tokens, rt.metrics.hot, rt.cache,
                     rt.source_ready if start_sources else (lambda: True))
    ofrep.bodies.max_bytes = settings.bodies_bytes
    health = Health(rt.store, rt.source_ready if start_sources else (lambda: True))
    admin = AdminApi(settings, rt.store, rt.auth, ofrep.source_ready)
    routes: list[BaseRoute] = [*ofrep.routes(), *admin.routes(), *health.routes(),
                               *rt.openapi.routes()]
    routes.append(Route("/metrics", rt.metrics.endpoint, methods=["GET"]))
    routes += _surfaces(rt)
    routes += extra_routes or []

    app = Starlette(routes=routes, middleware=_middleware(settings),
                    lifespan=_lifespan(rt, settings),
                    exception_handlers={404: _not_found, 405: _not_allowed,
                                        Exception: _internal_error})
    app.state.flagedge = rt
    # Outermost: the OFREP evaluate fast path; it times every request (through the full stack
    # otherwise), CORS preflights and errors included.
    app.add_middleware(FastOfrep, metrics=rt.metrics, ofrep=ofrep,
                       cors=bool(settings.cors_origins))
    return app


def _lifespan(rt: Runtime, settings: Settings
              ) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        _start(rt, settings)
        try:
            yield
        finally:
            await _stop(rt, settings)

    return lifespan


def _start(rt: Runtime, settings: Settings) -> None:
    """The background work of a serving worker: sources, metrics files, the collector clock."""
    for source in rt.sources:
        rt.tasks.append(asyncio.create_task(source.run(), name=f"source:{type(source).__name__}"))
    if settings.metrics_dir is not None:
        rt.tasks.append(asyncio.create_task(_flush_metrics(rt), name="metrics-flush"))
    gcpolicy.settle()  # what startup allocated stays out of every later pass
    if settings.gc_period > 0:  # collect on a clock, not inside requests (proxy/server/gcpolicy.py)
        rt.tasks.append(asyncio.create_task(
            gcpolicy.collect_on_clock(settings.gc_period), name="gc-clock"))
    else:
        gcpolicy.automatic()
    log.info("flagedge serving (%s)", "offline file " + str(settings.flags)
             if settings.flags else "redis")


async def _stop(rt: Runtime, settings: Settings) -> None:
    """Shutdown hooks first (streams say goodbye), then tasks, sources, the last metrics."""
    for hook in rt.on_shutdown:
        with contextlib.suppress(Exception):
            result = hook()
            if asyncio.iscoroutine(result):
                await result
    for task in rt.tasks:
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    rt.tasks.clear()
    for source in rt.sources:
        with contextlib.suppress(Exception):
            await source.close()
    if settings.metrics_dir is not None:
        with contextlib.suppress(OSError):
            rt.metrics.hot.write_snapshot(settings.metrics_dir)
    log.info("flagedge stopped")


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
    return [*_streams(rt), *(demo.mount(rt) if rt.settings.demo else [])]


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
                    coalesce_s=settings.sse_coalesce_ms / 1000)
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
        return create_app(load_settings(cli=data, environ={}))
    return create_app(load_settings())
