"""flagedge history --env ENV: the change log, newest first."""

from __future__ import annotations

import argparse
import time

from proxy.commands import _common as c

HELP = "show an environment's change history (version, time, author, message, flags)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_env_argument(parser)
    parser.add_argument("--limit", type=int, default=20, metavar="N",
                        help="newest N changes (default 20; 0 = all kept)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher

    entries = publisher.history(c.client(args), args.env, args.limit or None)
    if args.json:
        c.print_json([publisher.history_json(e) for e in entries])
        return c.OK
    if not entries:
        print(f"no history for environment {args.env}")
        return c.OK
    print(f"{'VERSION':>7}  {'TIME (UTC)':19}  {'AUTHOR':12}  {'OP':7}  FLAGS / MESSAGE")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        after = e.after or {}
        touched = e.flags + (["$evaluators"] if "$evaluators" in after else []) + (
            ["metadata"] if "metadata" in after else []) + (
            [f"fractional_hash={after['fractional_hash']}"] if "fractional_hash" in after else []
        ) + ([] if e.after else ["(unreadable)"])
        names = ", ".join(touched[:6]) + (f" +{len(touched) - 6}" if len(touched) > 6 else "")
        marks = publisher.release_marks(e)
        print(f"{e.version:>7}  {when:19}  {e.author[:12]:12}  {e.op:7}  {names}"
              + (f"  \"{e.message}\"" if e.message else "") + (f"  {marks}" if marks else ""))
    return c.OK
