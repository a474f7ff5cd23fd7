"""Settings for `flagedge serve`: a TOML file, then ``FLAGEDGE_*`` environment variables,
then command-line flags (each later layer overrides the earlier ones).

Every setting has one name used everywhere: the TOML key (``cors_origins`` or
``cors-origins``), the env var (``FLAGEDGE_CORS_ORIGINS``) and the flag (``--cors-origins``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "FLAGEDGE_"
# Other spellings accepted (the CLI's Redis commands read FLAGEDGE_REDIS_URL; FLAGEDGE_SECRET
# is the stream-token secret's older name). The canonical name wins when both are set.
ALIASES = {"redis_url": "redis", "secret": "stream_secret"}


class SettingsError(ValueError):
    """A setting has a bad value; the message names where it came from."""


@dataclass(frozen=True, slots=True)
class Settings:
    redis: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    keys_refresh: float = 30.0  # seconds between re-reads of flagedge:keys (0 = announcements only)
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    flags: Path | None = None  # offline mode: serve this file (watched), no Redis
    bootstrap: Path | None = None  # served until Redis answers
    keys: Path | None = None  # key hashes (`flagedge keys export`) where there is no Redis
    env: str = "default"  # environment of --flags/--bootstrap, and of --no-auth
    cors_origins: tuple[str, ...] = ()
    no_auth: bool = False
    body_limit: int = 64 * 1024
    rate_limit: float = 0.0  # default requests/s per key and worker; 0 = unlimited
    rate_burst: float = 0.0  # bucket size; 0 = max(1, rate_limit)
    cache_size: int = 10_000  # bulk results kept (LRU); cache_bytes bounds them too
    # Bytes of bulk results and their keys kept (LRU), per worker. A small body (<= 4 KB) is
    # kept whole; a larger one as pointers to items its flag set's entries share (350 flags:
    # ~3.5 KB an entry, key included), so 64 MB keeps the 10,000 of cache_size.
    cache_bytes: int = 64 * 1024 * 1024
    # Bytes of bulk results memoised by outcome vector (shared by the users who get the same
    # results), all environments, per worker.
    bodies_bytes: int = 32 * 1024 * 1024
    max_context_depth: int = 10
    max_context_items: int = 1_000
    stream_token_ttl: int = 86_400  # seconds per stream-token validity window
    # Stream-token HMAC secret (also FLAGEDGE_SECRET). With Redis, flagedge:secret is used
    # when this is unset; offline, unset means a random secret per serve (tokens die with it).
    stream_secret: str | None = None
    metrics_key: str | None = None  # when set, /metrics needs 'Authorization: Bearer <it>'
    # A second listener for /metrics, /readyz and /healthz (0: none); when set, the main port
    # has no /metrics and its /readyz lists no environments.
    admin_port: int = 0
    # flagd sync over gRPC (DESIGN §9) on this port, same host; 0 = off, so replicas on one
    # host never collide (`make run` and the Docker image use 8015).
    sync_port: int = 0
    inactivity_delay: int = 120  # eventStreams inactivityDelaySec
    sse_max_per_key: int = 10_000  # open SSE streams per API key, per worker (429 beyond)
    sse_max_connections: int = 20_000  # open SSE streams per worker process (503 beyond)
    # Open SSE streams per client address, per worker (429 beyond): one holder of a client
    # key (shipped in every browser) cannot take all of that key's streams.
    sse_max_per_address: int = 100
    # Addresses/CIDRs of our own proxies: from these peers the client address is the
    # right-most X-Forwarded-For entry that is not one of them (none: the header is ignored).
    trusted_proxies: tuple[str, ...] = ()
    header_timeout: float = 10.0  # seconds to receive a request's head (408 and close beyond)
    body_timeout: float = 30.0  # seconds to receive a whole request body after its head
    max_connections: int = 25_000  # open connections per worker (streams count; 503 beyond)
    sse_coalesce_ms: int = 100  # SSE changes within this window merge into one round
    # At a time boundary of the rules (literal $flagd.timestamp thresholds), each events and
    # evaluated stream is told within this many seconds (a random share each), so that every
    # client does not re-fetch in the same instant.
    boundary_jitter: float = 3.0
    sse_send_buffer: int = 65_536  # kernel send buffer per SSE stream, bytes (0: OS default)
    gc_period: float = 2.0  # seconds between garbage collections (0: CPython's own schedule)
    insights_flush: float = 5.0  # seconds between exposure flushes to Redis (0: none)
    insights_days: int = 30  # days insights keep daily exposures and unique users
    track_rate: float = 5.0  # POST /v1/track requests/s per client address, per worker (0: none)
    # Apply due scheduled change requests and expire overdue ones (DESIGN §10); every serve
    # may run one (the apply script is the fence). Needs Redis write access; not offline.
    release_worker: bool = True
    # Webhook deliveries (DESIGN §10, release/notify.py): attempts before one is recorded as
    # failed, and the first retry's delay in seconds (doubling each time, at most 10 minutes).
    notify_attempts: int = 8
    notify_backoff: float = 2.0
    # Seconds an outbox entry may sit with a delivery worker that shows no sign of life before
    # another serve takes it over (a dead proxy's entries are delivered by the others).
    notify_takeover: float = 60.0
    # Public base URL of this flagedge for links in notifications ('' = no link); messages link
    # to {ui_url}/ui/... (the management UI of DESIGN §12).
    ui_url: str = ""
    access_log: bool = True  # query strings are always redacted
    log_level: str = "info"
    graceful_timeout: float = 10.0
    metrics_dir: Path | None = None  # multiprocess metrics (set by `serve --workers N`)
    demo: bool = False  # serve the examples/web demo page at /demo/ (proxy/api/demo.py)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (to hand settings to uvicorn worker processes)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        return out


_FIELDS = {f.name: f for f in fields(Settings)}
_TYPES = {f.name: str(f.type) for f in fields(Settings)}


def _convert(name: str, value: Any, origin: str) -> Any:
    """Coerce ``value`` (str from env/CLI, or TOML-typed) to the type of setting ``name``."""
    kind = _TYPES[name]
    try:
        if value is None:
            if "None" in kind:
                return None
            raise ValueError("must not be empty")
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if kind.startswith("Path"):
            return Path(value) if str(value) else None
        if kind.startswith("tuple"):
            items = value if isinstance(value, list | tuple) else str(value).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind.startswith("str"):
            if not isinstance(value, str | int | float):
                raise ValueError(f"expected a string, got {value!r}")
            return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{origin}: {exc}") from exc
    raise SettingsError(f"{origin}: unsupported setting type {kind}")  # pragma: no cover


def from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SettingsError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    # A `[flagedge]` or `[serve]` table is accepted as well as top-level keys.
    for table in ("flagedge", "serve"):
        if isinstance(data.get(table), dict):
            data = {**{k: v for k, v in data.items() if k != table}, **data[table]}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        name = ALIASES.get(name, name)
        if name not in _FIELDS:
            raise SettingsError(f"{path}: unknown setting {key!r}")
        out[name] = _convert(name, value, f"{path}: {key}")
    return out


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias, name in ALIASES.items():
        var = ENV_PREFIX + alias.upper()
        if var in environ:
            out[name] = _convert(name, environ[var], var)
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in environ:
            out[name] = _convert(name, environ[var], var)
    return out


def from_cli(values: Mapping[str, Any]) -> dict[str, Any]:
    """CLI values (argparse namespace as a dict); ``None`` means 'not given'."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in _FIELDS and value is not None:
            out[name] = _convert(name, value, "--" + name.replace("_", "-"))
    return out


def load_settings(cli: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None,
                  config: Path | None = None) -> Settings:
    """TOML (``config``, or ``--config``/``FLAGEDGE_CONFIG``) < env vars < CLI flags."""
    environ = os.environ if environ is None else environ
    cli = dict(cli or {})
    config = config or cli.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
    merged: dict[str, Any] = {}
    if config:
        merged.update(from_toml(Path(config)))
    merged.update(from_env(environ))
    merged.update(from_cli(cli))
    settings = Settings(**merged)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if not 0 < s.port < 65536:
        raise SettingsError(f"port: {s.port} is not a TCP port")
    if s.workers < 1:
        raise SettingsError("workers: must be at least 1")
    if s.admin_port and (not 0 < s.admin_port < 65536 or s.admin_port == s.port):
        raise SettingsError(f"admin_port: {s.admin_port} is not a TCP port other than port "
                            "(0: no admin port)")
    if s.sync_port and (not 0 < s.sync_port < 65536 or s.sync_port in (s.port, s.admin_port)):
        raise SettingsError(f"sync_port: {s.sync_port} is not a TCP port other than port and "
                            "admin_port (0: no flagd sync)")
    if s.body_limit < 256:
        raise SettingsError("body_limit: must be at least 256 bytes")
    if s.rate_limit < 0 or s.rate_burst < 0:
        raise SettingsError("rate_limit/rate_burst: must not be negative")
    if s.cache_size < 0:
        raise SettingsError("cache_size: must not be negative")
    if s.cache_bytes < 0 or s.bodies_bytes < 0:
        raise SettingsError("cache_bytes/bodies_bytes: must not be negative (0 turns it off)")
    if s.sse_send_buffer < 0:
        raise SettingsError("sse_send_buffer: must not be negative (0 keeps the OS default)")
    if s.keys_refresh < 0:
        raise SettingsError("keys_refresh: must not be negative (0 turns the re-read off)")
    if s.gc_period < 0:
        raise SettingsError("gc_period: must not be negative (0 keeps CPython's own schedule)")
    if s.insights_flush < 0:
        raise SettingsError("insights_flush: must not be negative (0 turns flushing off)")
    if s.track_rate < 0:
        raise SettingsError("track_rate: must not be negative (0 turns the limit off)")
    if s.insights_days < 1:
        raise SettingsError("insights_days: must be at least 1")
    if s.notify_attempts < 1 or s.notify_backoff < 0 or s.notify_takeover <= 0:
        raise SettingsError("notify_attempts: must be at least 1; notify_backoff: not "
                            "negative; notify_takeover: positive seconds")
    if s.ui_url and not s.ui_url.startswith(("http://", "https://")):
        raise SettingsError(f"ui_url: {s.ui_url!r} is not an http(s) URL ('' for no links)")
    if s.stream_token_ttl < 60:
        raise SettingsError("stream_token_ttl: must be at least 60 seconds")
    _validate_connections(s)
    if s.flags is not None and s.bootstrap is not None:
        raise SettingsError("--flags (offline) and --bootstrap (Redis fallback) exclude each other")
    if not s.env or any(c in s.env for c in "{}: "):
        raise SettingsError(f"env: {s.env!r} is not a valid environment name")


def _validate_connections(s: Settings) -> None:
    if s.header_timeout <= 0 or s.body_timeout <= 0:
        raise SettingsError("header_timeout/body_timeout: must be positive seconds")
    if s.max_connections < 1:
        raise SettingsError("max_connections: must be at least 1")
    if s.sse_max_per_address < 1:
        raise SettingsError("sse_max_per_address: must be at least 1")
    for entry in s.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"trusted_proxies: {entry!r} is not an IP address or CIDR"
                                ) from None


def settings_fields() -> dict[str, dataclasses.Field[Any]]:
    return dict(_FIELDS)


__all__ = ["Settings", "SettingsError", "load_settings"]
