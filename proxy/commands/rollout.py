"""flagedge rollout KEY --env ENV --variant V --steps 5,25,50,100 --every 1h [--start TIME]
| --status | --pause | --abort: progressive rollouts (DESIGN §10; the rules:
release/rollout_rules.py, the writes: release/rollout.py).

A start writes one flagd-native rule that ramps by itself (no write per step); where the
environment is protected it becomes the change request it would apply (``request N``).
``--pause`` and ``--abort`` are kill operations: applied at once, marked ``kill`` there.
After the last step a release worker (any ``flagedge serve``) writes the static rule."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.commands import _common as c

HELP = "progressive rollout of a variant in timed steps: start, --status, --pause, --abort"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the flag's key")
    c.add_env_argument(parser)
    ops = parser.add_mutually_exclusive_group()
    ops.add_argument("--status", action="store_true", help="show state, step, percentage "
                     "and the next step's time")
    ops.add_argument("--pause", action="store_true", help="freeze at the current step (a "
                     "kill operation)")
    ops.add_argument("--abort", action="store_true", help="put the previous targeting back "
                     "(a kill operation)")
    parser.add_argument("--variant", metavar="V", help="the variant to roll out")
    parser.add_argument("--steps", metavar="P,P,...", help="strictly increasing percentages, "
                        "1 to 100 (5,25,50,100)")
    parser.add_argument("--every", metavar="DURATION", help="time between steps (30s, 5m, "
                        "1h, 2d)")
    parser.add_argument("--start", default=None, metavar="TIME", help="when the first step "
                        "begins: ISO 8601 with offset, or +DURATION (default: now)")
    parser.add_argument("--message", "-m", default="", help="why (change log, request)")
    c.add_author_argument(parser, "who changes it")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_write_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _check(args: argparse.Namespace) -> None:
    starting = not (args.status or args.pause or args.abort)
    given = [f"--{n}" for n in ("variant", "steps", "every", "start")
             if getattr(args, n) is not None]
    if starting and (missing := [f"--{n}" for n in ("variant", "steps", "every")
                                 if getattr(args, n) is None]):
        raise c.UsageError(f"starting a rollout needs {', '.join(missing)} (or use --status, "
                           "--pause, --abort)")
    if not starting and given:
        raise c.UsageError(f"{', '.join(given)} only go with starting a rollout")
    if args.break_glass and not starting:
        raise c.UsageError("--break-glass goes with starting a rollout (--pause and --abort "
                           "are kill operations: applied at once anyway)")
    if args.break_glass and not args.message.strip():
        raise c.UsageError("--break-glass needs a reason: -m WHY")


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review, rollout
    from proxy.release.authorization import Actor
    from proxy.release.rollout_rules import parse_steps
    from proxy.release.times import parse_duration, parse_time
    from proxy.storage.layout import check_env

    _check(args)
    check_env(args.env)
    client = c.client(args)
    if args.status:
        return _status(args, rollout.status(client, args.env, args.key))
    actor = Actor.cli(c.author(args))
    if args.pause or args.abort:
        do = rollout.pause if args.pause else rollout.abort
        written = do(client, args.env, args.key, actor=actor, message=args.message)
    else:
        steps = parse_steps(args.steps)
        every = parse_duration(args.every)
        start = (parse_time(args.start, review.redis_now(client, args.env))
                 if args.start else None)
        written = rollout.start(client, args.env, args.key, variant=args.variant, steps=steps,
                                every=every, actor=actor, start_at=start,
                                message=args.message, break_glass=args.break_glass)
    code = _written(args, written)
    if written.status == "ok":
        c.wait_replicas(args, client)
    return code


def _written(args: argparse.Namespace, written: Any) -> int:
    if args.json:
        c.print_json(written.to_json())
    elif written.status == "proposed":
        print(f"flagedge: {args.key}: {written.summary} needs approval in {args.env}",
              file=sys.stderr)
        if getattr(args, "start", None) is None and not (args.pause or args.abort):
            print("flagedge: warning: the steps' times are fixed now: approved later, the "
                  "rollout starts further along (give --start a time after the approval)",
                  file=sys.stderr)
        print(f"request {written.request.id}")
    elif written.status == "noop":
        print(f"nothing to do: flag {args.key} already has that rule")
    else:
        how = f" [{', '.join(written.marks).replace('_', '-')}]" if written.marks else ""
        print(f"flag {args.key}: {written.summary}: {args.env} version "
              f"{written.version}{how}")
    return c.OK


def _status(args: argparse.Namespace, status: dict[str, Any]) -> int:
    if args.json:
        c.print_json(status)
        return c.OK
    steps = ",".join(str(s) for s in status["steps"])
    print(f"rollout of {status['flag']} in {status['env']}: {status['state']}, variant "
          f"{status['variant']}, steps {steps}% every {status['every']}s from "
          f"{status['start_iso']}")
    if status["state"] == "aborted":
        print("aborted: the previous targeting is back")
    elif status["step"] == 0:
        print(f"not started: step 1 ({status['steps'][0]}%) at {status['start_iso']}")
    else:
        print(f"step {status['step']} of {len(status['steps'])}: {status['percent']}%"
              + (f", next step at {status['next_boundary']}" if status["next_boundary"]
                 else ""))
    if status["state"] == "running" and not status["ramping"]:
        print("warning: the flag no longer has this rollout's rule (another write replaced "
              "it)")
    return c.OK
