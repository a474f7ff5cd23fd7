"""Shared plumbing for the Redis-backed commands: flags, client, exit codes, errors.

Exit codes (stable, for scripts):
  0 success (diff: no differences)      1 invalid input (flags, sample, env name)
  2 usage error, unreadable file        3 version conflict (--expect-version)
  4 Redis unreachable or failing        5 not found (environment, key, version)
  6 differences found (diff --exit-code)
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

import orjson

OK, INVALID, USAGE, CONFLICT, REDIS, NOT_FOUND, DIFFERENT = 0, 1, 2, 3, 4, 5, 6


EXIT_CODES = ("exit codes: 0 ok, 1 invalid input, 2 usage error or unreadable file, "
              "3 version conflict, 4 Redis unreachable, 5 not found, "
              "6 differences (diff --exit-code)")


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    from proxy.storage.url import ENV_VAR

    parser.epilog = EXIT_CODES

    parser.add_argument("--redis", metavar="URL", default=None,
                        help=f"Redis URL (redis://, rediss://, unix://, redis+sentinel://); "
                             f"default ${ENV_VAR} or redis://127.0.0.1:6379/0")
    parser.add_argument("--cluster", action="store_true", help="the URL is a Redis Cluster node")


def add_env_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, metavar="ENV", help="environment name")


def default_author() -> str:
    try:
        return os.environ.get("FLAGEDGE_AUTHOR") or getpass.getuser()
    except Exception:
        return "unknown"


def client(args: argparse.Namespace) -> Any:
    from proxy.storage.url import default_url, sync_client

    return sync_client(args.redis or default_url(), cluster=getattr(args, "cluster", False),
                       socket_connect_timeout=5, socket_timeout=30)


def redis_url(args: argparse.Namespace) -> str:
    from proxy.storage.url import default_url, redact

    return redact(args.redis or default_url())


def err(message: str) -> None:
    print(f"flagedge: error: {message}", file=sys.stderr)


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def guarded(args: argparse.Namespace, body: Any) -> int:
    """Run ``body()`` turning the usual failures into one clear line and an exit code."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from proxy.model import InvalidDocument
    from proxy.release.publisher import ConflictError

    try:
        return int(body())
    except InvalidDocument as exc:
        for p in exc.problems:
            err(str(p))
        return INVALID
    except ConflictError as exc:
        err(str(exc))
        return CONFLICT
    except (RedisConnectionError, RedisTimeoutError) as exc:
        err(f"cannot reach Redis at {redis_url(args)}: {exc}")
        return REDIS
    except RedisError as exc:
        err(f"Redis at {redis_url(args)} failed: {exc}")
        return REDIS
    except LookupError as exc:
        err(str(exc.args[0]) if exc.args else str(exc))
        return NOT_FOUND
    except ValueError as exc:  # bad env name, bad sample file, bad URL
        err(str(exc))
        return INVALID
    except OSError as exc:  # as `flagedge validate`: an unreadable file is exit 2
        err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return USAGE
