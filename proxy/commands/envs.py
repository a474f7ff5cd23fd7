"""flagedge envs list|delete."""

from __future__ import annotations

import argparse
import time

from proxy.commands import _common as c

HELP = "list environments, or delete one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="environments with version, flag count, last writer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("delete", help="delete an environment's flags, metadata and history")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--yes", action="store_true", help="really delete (required)")
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher

    client = c.client(args)
    if args.action == "list":
        envs = publisher.list_envs(client)
        if args.json:
            c.print_json(envs)
        elif not envs:
            print("no environments")
        else:
            print(f"{'ENV':20}  {'VERSION':>7}  {'FLAGS':>5}  {'UPDATED (UTC)':19}  BY")
            for e in envs:
                when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["updated_at"]))
                        if e["updated_at"] else "-")
                print(f"{e['env']:20}  {e['version']:>7}  {e['flags']:>5}  {when:19}  "
                      f"{e['updated_by']}")
        return c.OK
    from proxy.storage.layout import check_env

    check_env(args.env)
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
