"""`flagedge serve`: the proxy over HTTP (uvicorn with uvloop + httptools)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

HELP = "serve OFREP evaluations and change streams over HTTP"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_config(level: str, access_log: bool = True) -> dict[str, Any]:
    """Logging for ``serve`` (and each of its workers). uvicorn's own access log is never on:
    with ``access_log``, our protocol records responses to :mod:`proxy.server.access_log`'s
    handler, which dictConfig creates here (it formats and buffers off the request path)."""
    level = level.upper()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "plain",
                        "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "flagedge": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
    if access_log:
        # Formats and buffers by itself, cuts query strings, names the worker's pid.
        config["handlers"]["access"] = {"()": "proxy.server.access_log.AccessLogHandler"}
        config["loggers"]["flagedge.access"] = {"handlers": ["access"], "level": "INFO",
                                                "propagate": False}
    return config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults are None: a flag only overrides the TOML file / env vars when given.
    a = parser.add_argument
    a("--config", type=Path, help="TOML settings file (FLAGEDGE_CONFIG)")
    a("--redis", help="Redis URL: redis://, rediss://, unix://, redis+sentinel:// (FLAGEDGE_REDIS)")
    a("--cluster", action="store_const", const=True, help="the Redis URL is a Cluster seed")
    a("--host", help="bind address (default 0.0.0.0)")
    a("--port", type=int, help="port (default 8080)")
    a("--workers", type=int, help="worker processes (default 1)")
    a("--flags", type=Path, help="offline mode: serve this flag file (watched), no Redis")
    a("--bootstrap", type=Path, help="flag file served until Redis answers")
    a("--keys", type=Path, help="key hashes (flagedge keys export) for use without Redis")
    a("--env", help="environment of --flags/--bootstrap/--no-auth (default 'default')")
    a("--cors-origins", help="comma-separated allowed browser origins, '*' for any")
    a("--no-auth", action="store_const", const=True,
      help="DANGER: no API keys; every caller is admin of --env (local use only)")
    a("--keys-refresh", type=float,
      help="seconds between re-reads of the keys in Redis, a safety net for lost "
           "announcements (default 30; 0 = off)")
    a("--rate-limit", type=float, help="default requests/s per key and worker (0 = unlimited)")
    a("--rate-burst", type=float, help="token bucket size (default: the rate, at least 1)")
    a("--body-limit", type=int, help="max request body bytes (default 65536)")
    a("--cache-size", type=int, help="bulk result cache entries (default 10000)")
    a("--cache-bytes", type=int, help="bulk result cache bytes per worker (default 64 MB)")
    a("--bodies-bytes", type=int,
      help="memoised bulk body bytes per worker, all environments (default 32 MB)")
    a("--stream-secret", help="stream-token HMAC secret (FLAGEDGE_SECRET); default: Redis's "
      "flagedge:secret, or random per serve offline")
    a("--metrics-key", help="require 'Authorization: Bearer KEY' on /metrics (FLAGEDGE_METRICS_KEY)")
    a("--admin-port", type=int,
      help="serve /metrics, /readyz, /healthz on this port too (and /metrics only there)")
    a("--sync-port", type=int,
      help="serve flagd sync (gRPC, flagd.sync.v1) on this port for flagd's in-process "
           "providers and flagd itself (default 0: off)")
    a("--header-timeout", type=float,
      help="seconds to receive a request's head, else 408 and close (default 10)")
    a("--body-timeout", type=float,
      help="seconds to receive a request's body after its head (default 30)")
    a("--max-connections", type=int,
      help="open connections per worker, streams included; 503 beyond (default 25000)")
    a("--sse-max-per-address", type=int,
      help="open streams per client address and worker; 429 beyond (default 100)")
    a("--trusted-proxies",
      help="comma-separated proxy addresses/CIDRs whose X-Forwarded-For names the client")
    a("--log-level", help="debug, info, warning, error (default info)")
    a("--no-access-log", dest="access_log", action="store_const", const=False,
      help="disable the (query-string-free) access log")
    a("--no-release-worker", dest="release_worker", action="store_const", const=False,
      help="do not apply scheduled change requests here (other serves, or none, do)")
    a("--demo", action="store_const", const=True,
      help="serve the demo page (examples/web, OFREP web provider) at /demo/")


def _stopped(signum: int, _frame: Any) -> None:
    """SIGTERM outside uvicorn's own handlers: uvicorn re-raises the SIGTERM it handled once its
    graceful shutdown is complete, and one arriving before it listens stops us as cleanly.
    Either way the stop was asked for and clean: exit 0, not "killed by SIGTERM" (143)."""
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    import orjson

    from proxy.config import SettingsError, load_settings
    from proxy.server import connections
    from proxy.server.http_protocol import GatheringHttpToolsProtocol

    try:
        settings = load_settings(cli={k: v for k, v in vars(args).items() if not k.startswith("_")})
    except SettingsError as exc:
        print(f"flagedge serve: {exc}", file=sys.stderr)
        return 2
    if settings.keys is not None:  # fail fast, naming the file and entry, before any worker
        from proxy.keys import KeyRing

        try:
            KeyRing().load_file(settings.keys)
        except (OSError, ValueError) as exc:
            print(f"flagedge serve: --keys: {exc}", file=sys.stderr)
            return 2
    settings, temp_metrics = _shared_by_workers(settings)
    # X-Forwarded-For is read by our protocol, from trusted_proxies only (not uvicorn's
    # proxy_headers, which trusts 127.0.0.1 unless told otherwise).
    common: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "loop": "uvloop", "http": GatheringHttpToolsProtocol,
        "log_config": log_config(settings.log_level, settings.access_log), "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_timeout, "proxy_headers": False,
        "server_header": False, "lifespan": "on",
    }
    import logging.config

    logging.config.dictConfig(common["log_config"])  # so startup's warnings show
    # The listening process: its limits, and an open-file limit its workers inherit (each
    # worker raises its own again, see proxy.server.app.factory).
    connections.configure(settings)
    if settings.workers > 1:
        # Workers read the settings from a file only this user can read, named in the
        # environment: the settings themselves (the Redis URL's password, stream_secret) never
        # sit in a worker's environment (/proc/PID/environ, crash reports, its children).
        # The file stays while serving (uvicorn restarts a dead worker) and goes at exit.
        private = Path(tempfile.mkdtemp(prefix="flagedge-serve-"))  # mode 0700
        settings_file = private / "settings.json"
        fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(settings.to_json()))
        os.environ["FLAGEDGE__SETTINGS_FILE"] = str(settings_file)
        signal.signal(signal.SIGTERM, _stopped)  # until uvicorn's supervisor takes SIGTERM
        try:
            _run_uvicorn("proxy.server.app:factory", common, settings.workers,
                         settings.admin_port)
        finally:
            shutil.rmtree(private, ignore_errors=True)
            if temp_metrics is not None:
                shutil.rmtree(temp_metrics, ignore_errors=True)
    else:
        from proxy.server.app import create_app

        app = create_app(settings)
        signal.signal(signal.SIGTERM, _stopped)
        _run_uvicorn(app, common, 1, settings.admin_port)
    return 0


def _shared_by_workers(settings: Any) -> tuple[Any, Path | None]:
    """What ``--workers N`` share: an offline token secret (no Redis to hold one) and the
    metrics snapshot directory (a temporary one, returned to be removed at exit)."""
    if (settings.workers > 1 and settings.flags is not None and not settings.stream_secret
            and not settings.no_auth):
        # One random secret for all the workers (in their 0600 settings file), so a token
        # from one opens streams on another.
        import secrets

        print("flagedge serve: warning: no stream_secret (FLAGEDGE_SECRET) set: stream tokens "
              "are signed with a random secret of this serve; they stop working when it "
              "restarts and are refused by other replicas", file=sys.stderr)
        settings = settings.replace(stream_secret=secrets.token_urlsafe(32))
    temp_metrics = None
    if settings.workers > 1 and settings.metrics_dir is None:
        # Workers share counters through snapshots in one directory (see api/metrics.py).
        temp_metrics = Path(tempfile.mkdtemp(prefix="flagedge-metrics-"))
        settings = settings.replace(metrics_dir=temp_metrics)
    if settings.metrics_dir is not None:  # counters start at zero with each serve
        for pattern in ("worker-*.json", "sync-*.json"):
            for old in settings.metrics_dir.glob(pattern):
                old.unlink(missing_ok=True)
    return settings, temp_metrics


def _run_uvicorn(app: Any, common: dict[str, Any], workers: int, admin_port: int) -> None:
    """``uvicorn.run``, with a second listener when ``admin_port`` is set. uvicorn binds one
    socket itself; here both are bound (by its own ``Config.bind_socket``) and handed to the
    server, or with ``--workers N`` to its supervisor, which gives every worker both. The
    app tells them apart by the port a request came in on (``proxy.server.app``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    factory = workers > 1
    if not admin_port:
        uvicorn.run(app, factory=factory, workers=workers, **common)
        return
    config = uvicorn.Config(app, factory=factory, workers=workers, **common)
    admin = uvicorn.Config(app, **{**common, "port": admin_port})
    sockets = [config.bind_socket(), admin.bind_socket()]
    if workers > 1:
        Multiprocess(config, sockets=sockets).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits
