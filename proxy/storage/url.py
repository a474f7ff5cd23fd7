"""One place that turns a Redis URL into a redis-py client (asyncio or sync).

Supported: ``redis://``, ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://`` (the master of
a Sentinel-managed service) and Redis Cluster (``cluster=True`` with a redis:// or rediss://
seed URL). Sentinel URL form::

    redis+sentinel://[user:password@]host1:26379[,host2:26379]/SERVICE[/DB]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ENV_VAR = "FLAGEDGE_REDIS_URL"


def default_url() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class SentinelURL:
    hosts: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    ssl: bool


def parse_sentinel(url: str) -> SentinelURL:
    scheme, rest = url.split("://", 1)
    creds, _, hostpart = rest.rpartition("@")
    hostlist, _, path = hostpart.partition("/")
    username = password = None
    if creds:
        user, _, pw = creds.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        hosts.append((host or "127.0.0.1", int(port or 26379)))
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts:
        raise ValueError(f"sentinel URL needs a service name: {redact(url)}")
    db = int(parts[1]) if len(parts) > 1 else 0
    return SentinelURL(hosts, parts[0], db, username, password, scheme.startswith("rediss"))


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _check(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}:
        raise ValueError(
            f"unsupported Redis URL {redact(url)!r}: use redis://, rediss://, unix:// "
            "or redis+sentinel://"
        )
    return scheme


def async_client(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """A ``redis.asyncio`` client (``Redis``, ``RedisCluster`` or a Sentinel master)."""
    if cluster:  # one connection per node is the cluster client's own business
        kwargs.pop("single_connection_client", None)
    return _client(url, cluster, kwargs, redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster,
                   redis.asyncio.sentinel.Sentinel)


def sync_client(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """A blocking client for the CLI."""
    return _client(url, cluster, kwargs, redis.Redis, redis.cluster.RedisCluster,
                   redis.sentinel.Sentinel)


def _client(url: str, cluster: bool, kwargs: dict[str, Any], redis_cls: Any, cluster_cls: Any,
            sentinel_cls: Any) -> Any:
    """The same URL rules for the blocking and the asyncio flavours of redis-py."""
    scheme = _check(url)
    if scheme.endswith("+sentinel"):
        s = parse_sentinel(url)
        auth = {"username": s.username, "password": s.password, "ssl": s.ssl}
        sentinel = sentinel_cls(s.hosts, sentinel_kwargs=dict(auth), **auth)
        return sentinel.master_for(s.service, db=s.db, **kwargs)
    if cluster:
        return cluster_cls.from_url(url, **kwargs)
    return redis_cls.from_url(url, **kwargs)
