"""flagedge envs list|set|delete|protect|unprotect."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from proxy.commands import _common as c
from proxy.commands import _policy

if TYPE_CHECKING:
    from proxy.model import FractionalHash

HELP = ("list environments, change an environment's settings, delete one, or protect one "
        "(changes need approvals)")

REBUCKETS = ("switching fractional hashing re-buckets users: every `fractional` rule of "
             "{env} puts a different share of them in each variant from the next version on "
             "(replicas and streams follow it live); run again with --yes to switch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="environments with version, flag count, last writer, "
                                    "fractional hashing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("set", help="change an environment's settings (a versioned change)")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--fractional-hash", required=True, choices=("v2", "v3"),
                   help="how `fractional` hashes: v2 (flagKey + targetingKey: flagd-core 4.0.1 "
                        "in JS, Python provider <= 0.5.2) or v3 (canonical CBOR: Python "
                        "provider 0.6.x); changing it re-buckets users")
    p.add_argument("--yes", action="store_true", help="really switch (required: it re-buckets "
                                                      "users)")
    p.add_argument("--expect-version", type=int, metavar="N",
                   help="fail (exit 3) unless the environment is at version N")
    p.add_argument("--message", "-m", default="", help="change description (audit log)")
    p.add_argument("--author", default=None, help="who changes it (default: $FLAGEDGE_AUTHOR "
                   "or the login name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_break_glass_argument(p)
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)
    p = sub.add_parser("delete", help="delete an environment's flags, metadata and history")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--yes", action="store_true", help="really delete (required)")
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)
    _policy.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher

    client = c.client(args)
    if args.action in ("protect", "unprotect"):
        return _policy.run(args, client)
    if args.action == "list":
        return _list(publisher.list_envs(client), args.json)
    from proxy.storage.layout import check_env

    check_env(args.env)
    if args.action == "set":
        return _set(args, client)
    if not args.yes:
        c.err(f"refusing to delete environment {args.env} without --yes")
        return c.USAGE
    names = {e["env"] for e in publisher.list_envs(client)}
    if args.env not in names and not publisher.read_state(client, args.env).exists:
        raise LookupError(f"environment {args.env} does not exist")
    version = publisher.delete_env(client, args.env)
    print(f"deleted environment {args.env} (was at version {version})")
    c.wait_replicas(args, client)
    return c.OK


def _list(envs: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        c.print_json(envs)
    elif not envs:
        print("no environments")
    else:
        print(f"{'ENV':20}  {'VERSION':>7}  {'FLAGS':>5}  {'HASH':4}  {'UPDATED (UTC)':19}  "
              f"{'PROTECTED':9}  BY")
        for e in envs:
            when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["updated_at"]))
                    if e["updated_at"] else "-")
            print(f"{e['env']:20}  {e['version']:>7}  {e['flags']:>5}  "
                  f"{e['fractional_hash']:4}  {when:19}  {_policy.protection(e['policy']):9}  "
                  f"{e['updated_by']}")
    return c.OK


def _set(args: argparse.Namespace, client: Any) -> int:
    """``envs set ENV --fractional-hash v2|v3``: refused without --yes when it would switch."""
    from proxy.model import FractionalHash
    from proxy.release import publisher

    wanted = FractionalHash.parse(args.fractional_hash)
    state = publisher.read_state(client, args.env)
    if not state.exists:
        raise LookupError(f"environment {args.env} does not exist in Redis")
    current = state.fractional_hash
    if current is wanted:
        return _report_set(args, "noop", state.version, current, current)
    if not args.yes:
        c.err(f"environment {args.env} hashes fractional {current.value}; "
              + REBUCKETS.format(env=args.env))
        return c.USAGE
    guard = c.release_guard(args, client, hint="a change request cannot switch hashing "
                            "yet: use --break-glass -m WHY")
    result = publisher.set_fractional_hash(
        client, args.env, wanted, expect_version=args.expect_version,
        author=args.author or c.default_author(), message=args.message, guard=guard)
    code = _report_set(args, result.status, result.version, current, wanted)
    if result.status == "ok":
        c.wait_replicas(args, client)
    return code


def _report_set(args: argparse.Namespace, status: str, version: int, old: FractionalHash,
                new: FractionalHash) -> int:
    before, after = old.value, new.value
    if args.json:
        c.print_json({"env": args.env, "status": status, "version": version,
                      "fractional_hash": after, "previous": before})
    elif status == "noop":
        print(f"environment {args.env} already hashes fractional {after}: nothing written "
              f"(version {version})")
    else:
        print(f"environment {args.env} version {version}: fractional hashing {before} -> "
              f"{after}")
    return c.OK
