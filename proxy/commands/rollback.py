"""flagedge rollback --env ENV --to VERSION: a new version equal to an old one."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c

HELP = "write a new version whose rules equal an earlier version's"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_env_argument(parser)
    parser.add_argument("--to", type=int, required=True, metavar="VERSION",
                        help="the version to restore")
    parser.add_argument("--message", "-m", default="", help="change description")
    parser.add_argument("--author", default=None, help="who rolls back")
    parser.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_wait_arguments(parser)
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher
    from proxy.release.changeset import describe

    client = c.client(args)
    state, plan = publisher.rollback_plan(client, args.env, args.to)
    out: dict = {"env": args.env, "from_version": state.version, "to": args.to,
                 "diff": plan.to_json()}
    if not args.json:
        print(f"rolling {args.env} back from version {state.version} to the rules of "
              f"version {args.to}:")
        print("\n".join(describe(plan, args.env)))
    if args.dry_run:
        if args.json:
            c.print_json({**out, "dry_run": True})
        else:
            print("dry run: nothing written")
        return c.OK
    result = publisher.write(
        client, args.env, plan, expect_version=state.version,
        author=args.author or c.default_author(),
        message=args.message or f"rollback to version {args.to}", op="replace")
    if args.json:
        c.print_json({**out, "status": result.status, "version": result.version})
    elif result.status == "noop":
        print(f"nothing to do: {args.env} already equals version {args.to}")
    else:
        print(f"rolled back {args.env}: version {result.version} equals version {args.to}")
    if result.status == "ok":
        c.wait_replicas(args, client)
    return c.OK
