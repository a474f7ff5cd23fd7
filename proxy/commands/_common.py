"""Shared plumbing for the Redis-backed commands: flags, client, exit codes, errors.

Exit codes (stable, for scripts):
  0 success (diff: no differences)      1 invalid input (flags, sample, env name)
  2 usage error, unreadable file        3 version conflict (--expect-version)
  4 Redis unreachable or failing        5 not found (environment, key, version)
  6 differences found (diff --exit-code)   8 written, but fewer replicas than
                                           --wait-replicas acknowledged it in time
  9 Redis holds a newer data layout (flagedge:layout) than this flagedge knows: upgrade
  7 approval required: the environment is protected, use flagedge propose (DESIGN §10)
  10 refused: not allowed (approving one's own request, not on the approvers' list, a
     missing role); 3 also when a change request is no longer open or ended in conflict
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

import orjson

OK, INVALID, USAGE, CONFLICT, REDIS, NOT_FOUND, DIFFERENT = 0, 1, 2, 3, 4, 5, 6
NOT_REPLICATED = 8
LAYOUT_TOO_NEW = 9
APPROVAL_REQUIRED = 7  # DESIGN §10
REFUSED = 10
DEFAULT_WAIT_TIMEOUT_MS = 1000


EXIT_CODES = ("exit codes: 0 ok, 1 invalid input, 2 usage error or unreadable file, "
              "3 version conflict, 4 Redis unreachable, 5 not found, "
              "6 differences (diff --exit-code), 7 approval required (protected environment), "
              "8 written but not on --wait-replicas replicas, "
              "9 Redis layout newer than this flagedge, 10 refused (not allowed)")


class UsageError(Exception):
    """Flags that cannot go together (exit 2)."""


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    from proxy.storage.url import ENV_VAR

    parser.epilog = EXIT_CODES

    parser.add_argument("--redis", metavar="URL", default=None,
                        help=f"Redis URL (redis://, rediss://, unix://, redis+sentinel://); "
                             f"default ${ENV_VAR} or redis://127.0.0.1:6379/0")
    parser.add_argument("--cluster", action="store_true", help="the URL is a Redis Cluster node")


def add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wait-replicas N`` / ``--wait-timeout MS`` for the commands that write."""
    parser.add_argument("--wait-replicas", type=int, default=0, metavar="N",
                        help="after writing, wait until N replicas acknowledged the write "
                             "(Redis WAIT); fewer in time: exit 8, the write stays")
    parser.add_argument("--wait-timeout", type=int, default=DEFAULT_WAIT_TIMEOUT_MS,
                        metavar="MS", help="how long --wait-replicas waits (default "
                                           f"{DEFAULT_WAIT_TIMEOUT_MS} ms)")


def check_wait(args: argparse.Namespace) -> None:
    """Refuse bad --wait-* values before anything is written."""
    n = getattr(args, "wait_replicas", 0)
    if not n:
        return
    if n < 0:
        raise UsageError("--wait-replicas must be 0 or more")
    if args.wait_timeout <= 0:
        raise UsageError("--wait-timeout must be a positive number of milliseconds")
    if getattr(args, "cluster", False):
        raise UsageError(
            "--wait-replicas is not supported with --cluster: redis-py sends WAIT to every "
            "primary on connections other than the one that wrote, so its answer would not "
            "cover this write")


def wait_replicas(args: argparse.Namespace, client: Any) -> None:
    """After a write: WAIT for --wait-replicas replicas (nothing when it is 0). Raises
    NotReplicated (exit 8) when fewer acknowledged in time."""
    if getattr(args, "wait_replicas", 0):
        from proxy.release.publisher import wait_replicas

        wait_replicas(client, args.wait_replicas, args.wait_timeout)


def add_env_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, metavar="ENV", help="environment name")


def default_author() -> str:
    try:
        return os.environ.get("FLAGEDGE_AUTHOR") or getpass.getuser()
    except Exception:
        return "unknown"


def client(args: argparse.Namespace) -> Any:
    """A client for the Redis of ``args``, after checking its layout (LayoutTooNew: exit 9):
    a CLI must neither misread nor write data laid out by a newer flagedge."""
    from proxy.storage.layout import LAYOUT, check_layout
    from proxy.storage.url import default_url, sync_client

    check_wait(args)
    timeout = 30.0
    if getattr(args, "wait_replicas", 0):  # WAIT blocks the reply up to --wait-timeout
        timeout += args.wait_timeout / 1000
    redis_client = sync_client(args.redis or default_url(), cluster=getattr(args, "cluster", False),
                               socket_connect_timeout=5, socket_timeout=timeout)
    check_layout(redis_client.get(LAYOUT))
    return redis_client


def add_author_argument(parser: argparse.ArgumentParser, what: str = "who does it") -> None:
    parser.add_argument("--author", default=None,
                        help=f"{what} (default: $FLAGEDGE_AUTHOR or the login name)")


def author(args: argparse.Namespace) -> str:
    return str(args.author or default_author())


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
    from proxy.release.publisher import ApprovalRequired, ConflictError, NotReplicated
    from proxy.release.review import NotOpen, Refused
    from proxy.storage.layout import LayoutTooNew

    try:
        return int(body())
    except ApprovalRequired as exc:
        err(f"{exc}; nothing was written")
        return APPROVAL_REQUIRED
    except Refused as exc:
        err(f"refused: {exc}")
        return REFUSED
    except NotOpen as exc:
        err(str(exc))
        return CONFLICT
    except LayoutTooNew as exc:
        err(f"Redis at {redis_url(args)}: {exc}; nothing was read or written: upgrade "
            "flagedge")
        return LAYOUT_TOO_NEW
    except InvalidDocument as exc:
        for p in exc.problems:
            err(str(p))
        return INVALID
    except ConflictError as exc:
        err(str(exc))
        return CONFLICT
    except NotReplicated as exc:
        err(str(exc))
        return NOT_REPLICATED
    except UsageError as exc:
        err(str(exc))
        return USAGE
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


def add_write_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that writes a version takes last: ``--break-glass``, the replica
    wait and the Redis connection."""
    add_break_glass_argument(parser)
    add_wait_arguments(parser)
    add_redis_arguments(parser)


def add_break_glass_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--break-glass", action="store_true",
                        help="in a protected environment, write at once anyway (needs -m WHY; "
                             "marked break_glass in the change log)")


def release_guard(args: argparse.Namespace, client: Any, kind: str = "change",
                  hint: str = "use flagedge propose") -> Any:
    """How this CLI write passes release control (DESIGN §10), decided for a CLI caller
    (every role) by ``release.review.write_guard``: the ``guard`` for ``publisher.write``
    (``{}`` or the change entry's mark), or the Decision when the write must become a request
    instead. Raises ApprovalRequired (exit 7) / Refused (exit 10)."""
    from proxy.release import authorization as authz
    from proxy.release import review

    return review.write_guard(
        client, args.env, authz.Actor.cli(author(args)),
        authz.WriteKind.KILL if kind == "kill" else authz.WriteKind.CHANGE,
        break_glass=getattr(args, "break_glass", False), reason=args.message or "",
        hint=hint)
