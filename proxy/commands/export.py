"""flagedge export --env ENV: the stored flagd document, byte-stable."""

from __future__ import annotations

import argparse
import sys

from proxy.commands import _common as c

HELP = "print an environment's flags as a flagd document (sorted, byte-stable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_env_argument(parser)
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher

    data = publisher.export(c.client(args), args.env)
    if args.output:
        with open(args.output, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return c.OK
