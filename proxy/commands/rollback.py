"""flagedge rollback --env ENV --to VERSION: a new version equal to an old one."""

from __future__ import annotations

import argparse
from typing import Any

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
    parser.add_argument("--propose", action="store_true",
                        help="create a change request for the rollback instead of writing it "
                             "(in a protected environment a rollback is a kill operation, "
                             "applied at once and marked kill)")
    parser.add_argument("--at", default=None, metavar="TIME",
                        help="a change request applied at TIME (ISO 8601 with offset, or "
                             "+DURATION) by a release worker, once approved")
    c.add_write_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher
    from proxy.release.changeset import describe

    client = c.client(args)
    if args.at and args.break_glass:
        raise c.UsageError("--at makes a change request; --break-glass writes at once: "
                           "choose one")
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
    message = args.message or f"rollback to version {args.to}"
    if args.at:
        return _propose(args, client, state, plan, message)
    guard = c.release_guard(args, client, kind="kill")
    if args.propose or not isinstance(guard, dict):
        return _propose(args, client, state, plan, message)
    result = publisher.write(
        client, args.env, plan, expect_version=state.version,
        author=args.author or c.default_author(), message=message, op="replace",
        guard=guard)
    if args.json:
        c.print_json({**out, "status": result.status, "version": result.version})
    elif result.status == "noop":
        print(f"nothing to do: {args.env} already equals version {args.to}")
    else:
        print(f"rolled back {args.env}: version {result.version} equals version {args.to}")
    if result.status == "ok":
        c.wait_replicas(args, client)
    return c.OK


def _propose(args: argparse.Namespace, client: Any, state: Any, plan: Any, message: str) -> int:
    """The rollback as a change request (``--propose``, or a caller without the kill role)."""
    from proxy.release import review
    from proxy.release.authorization import Actor
    from proxy.release.times import parse_time

    if plan.empty:
        print(f"nothing to do: {args.env} already equals version {args.to}")
        return c.OK
    apply_at = parse_time(args.at, review.redis_now(client, args.env)) if args.at else None
    request = review.propose_plan(client, args.env, state, plan,
                                  actor=Actor.cli(c.author(args)), message=message,
                                  apply_at=apply_at)
    if args.json:
        c.print_json({"status": "proposed", "request": request.to_json()})
    else:
        print(f"request {request.id}")
    return c.OK
