"""`flagedge` command line: one module per command under ``proxy.commands``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). Modules import heavy dependencies inside ``run`` so
that ``flagedge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order `flagedge --help` lists them in.
COMMANDS = [
    "serve",
    "validate",
    "push",
    "diff",
    "export",
    "history",
    "rollback",
    "flag",
    "rollout",
    "envs",
    "keys",
    "propose",
    "requests",
    "approve",
    "reject",
    "cancel",
    "notify",
    "insights",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagedge", description="Edge flag-evaluation proxy (flagd flags, OFREP, SSE)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"proxy.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `flagedge history | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
