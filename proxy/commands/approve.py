"""flagedge approve N --env ENV: approve a change request; at quorum it is applied."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c
from proxy.commands import _review

HELP = "approve a change request (applied at once when this makes the quorum)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _review.add_request_arguments(parser)
    c.add_author_argument(parser, "who approves (must not be the request's author)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review
    from proxy.release.authorization import Actor

    client = c.client(args)
    outcome = review.approve(client, args.env, args.id, Actor.cli(c.author(args)))
    if not args.json:
        print("\n".join(_review.preview_lines(outcome.request.preview)))
    return _review.report(outcome, args.env, args.json)
