"""flagedge diff FILE --env ENV: what a push of FILE would change."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c

HELP = "show what pushing a flag file would change in an environment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="flagd flag-definition JSON (- for stdin)")
    c.add_env_argument(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--exit-code", action="store_true",
                        help="exit 6 when there are differences (like git diff --exit-code)")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher
    from proxy.release.changeset import describe
    from proxy.storage.layout import check_env

    check_env(args.env)
    new = publisher.parse_file(args.file)
    state, plan = publisher.diff(c.client(args), args.env, new)
    if args.json:
        c.print_json({"env": args.env, "version": state.version, "diff": plan.to_json(),
                      "empty": plan.empty})
    else:
        print("\n".join(describe(plan, args.env)))
    return c.DIFFERENT if args.exit_code and not plan.empty else c.OK
