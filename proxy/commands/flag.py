"""flagedge flag KEY --env ENV (--default V | --enable | --disable | --percent N [--variant V]):
one flag changed as an ordinary versioned write (DESIGN §10; the edits: release/oneliners.py).

Where the environment is protected it becomes the change request it would apply (``request
N``), except ``--disable`` (a kill operation: the CLI caller holds the kill role) and
``--break-glass -m WHY``, both applied at once and marked. ``--at TIME`` always makes a
scheduled request, applied by a release worker when due and approved."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.commands import _common as c

HELP = "change one flag: default variant, enable, disable (kill switch), or a percentage"
TRIES = 3  # re-read and redo the edit when another write landed between read and write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the flag's key")
    c.add_env_argument(parser)
    ops = parser.add_mutually_exclusive_group(required=True)
    ops.add_argument("--default", metavar="VARIANT", help="serve VARIANT by default "
                     "(targeting still applies to the users it matches)")
    ops.add_argument("--enable", action="store_true", help="state ENABLED")
    ops.add_argument("--disable", action="store_true", help="state DISABLED: the kill "
                     "switch (clients fall back to their code default)")
    ops.add_argument("--percent", type=int, metavar="N", help="serve --variant to N%% of "
                     "users and the default variant to the rest (REPLACES the targeting)")
    parser.add_argument("--variant", metavar="V", help="the variant --percent serves "
                        "(default: the other one, when the flag has two)")
    parser.add_argument("--message", "-m", default="", help="why (change log, request)")
    c.add_author_argument(parser, "who changes it")
    parser.add_argument("--at", default=None, metavar="TIME",
                        help="a change request applied at TIME (ISO 8601 with offset, or "
                             "+DURATION) by a release worker, once approved")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the diff and the rollout impact, write nothing")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_write_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def operation(args: argparse.Namespace) -> Any:
    from proxy.release.oneliners import FlagOp

    if args.variant is not None and args.percent is None:
        raise c.UsageError("--variant goes with --percent (use --default VARIANT to change "
                           "the default)")
    if args.break_glass and not args.message.strip():
        raise c.UsageError("--break-glass needs a reason: -m WHY")
    if args.at and args.break_glass:
        raise c.UsageError("--at makes a change request; --break-glass writes at once: "
                           "choose one")
    if args.default is not None:
        return FlagOp("default", variant=args.default)
    if args.percent is not None:
        return FlagOp("percent", variant=args.variant, percent=args.percent)
    return FlagOp("enable" if args.enable else "disable")


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher, review
    from proxy.release.times import parse_time
    from proxy.storage.layout import check_env

    op = operation(args)
    check_env(args.env)
    client = c.client(args)
    apply_at = parse_time(args.at, review.redis_now(client, args.env)) if args.at else None
    for _ in range(TRIES):
        state, plan, change = edited(client, args.env, args.key, op)
        if not args.json:
            for warning in change.warnings:
                print(f"flagedge: warning: {warning}", file=sys.stderr)
        out: dict[str, Any] = {"env": args.env, "flag": args.key, "operation": change.summary,
                               "base_version": state.version, "diff": plan.to_json(),
                               "warnings": list(change.warnings)}
        if plan.empty:
            return _done(args, {**out, "status": "noop", "version": state.version},
                         f"nothing to do: flag {args.key} already has {change.summary} "
                         f"({args.env} stays at version {state.version})")
        if args.dry_run:
            return _dry_run(args, state, plan, out)
        if apply_at is not None:
            return _propose(args, client, state, plan, out, change.summary, apply_at)
        try:
            guard = c.release_guard(args, client, kind="kill" if op.is_kill else "change")
            if not isinstance(guard, dict):
                return _propose(args, client, state, plan, out, change.summary, None)
            result = publisher.write(client, args.env, plan, expect_version=state.version,
                                     author=c.author(args),
                                     message=_message(args, change.summary), guard=guard)
        except publisher.ApprovalRequired:  # protected: the request it would apply
            return _propose(args, client, state, plan, out, change.summary, None)
        except publisher.ConflictError:
            continue  # someone wrote between our read and our write: edit the new state
        out.update(status=result.status, version=result.version, marks=sorted(guard))
        how = f" [{', '.join(sorted(guard)).replace('_', '-')}]" if guard else ""
        code = _done(args, out, f"flag {args.key}: {change.summary}: {args.env} version "
                                f"{result.version}{how}")
        c.wait_replicas(args, client)
        return code
    raise publisher.ConflictError(args.env, state.version,
                                  publisher.read_state(client, args.env).version)


def edited(client: Any, env: str, key: str, op: Any) -> tuple[Any, Any, Any]:
    """The environment as stored, the plan of the one-flag edit, the edit. Raises
    LookupError (exit 5) for a missing environment or flag, ValueError (exit 1) for an
    edit that does not fit or a flag that would not validate."""
    from proxy.release import oneliners, publisher

    state = publisher.read_state(client, env)
    plan, change = oneliners.plan_edit(state, key, op)
    return state, plan, change


def _message(args: argparse.Namespace, summary: str) -> str:
    return args.message or f"flag {args.key}: {summary}"


def _done(args: argparse.Namespace, out: dict[str, Any], line: str) -> int:
    if args.json:
        c.print_json(out)
    else:
        print(line)
    return c.OK


def _dry_run(args: argparse.Namespace, state: Any, plan: Any, out: dict[str, Any]) -> int:
    from proxy.commands._review import preview_lines
    from proxy.release import review
    from proxy.release.changeset import describe
    from proxy.release.requests import change_of

    preview = review.preview(state, change_of(plan, state.document()))
    out.update(status="dry_run", impact=preview["impact"])
    if args.json:
        c.print_json(out)
        return c.OK
    print("\n".join(describe(plan, args.env)))
    print("\n".join(preview_lines(preview)) or "rollout impact: no results change",
          file=sys.stdout)
    print("dry run: nothing written")
    return c.OK


def _propose(args: argparse.Namespace, client: Any, state: Any, plan: Any,
             out: dict[str, Any], summary: str, apply_at: float | None) -> int:
    from proxy.release import review
    from proxy.release.authorization import Actor
    from proxy.release.times import iso

    request = review.propose_plan(client, args.env, state, plan,
                                  actor=Actor.cli(c.author(args)),
                                  message=_message(args, summary),
                                  apply_at=apply_at)
    out.update(status="proposed", request=request.to_json())
    when = f", to apply at {iso(apply_at)} once approved" if apply_at is not None else ""
    if not args.json:
        print(f"flag {args.key}: {summary} needs approval in {args.env}{when}",
              file=sys.stderr)
    return _done(args, out, f"request {request.id}")
