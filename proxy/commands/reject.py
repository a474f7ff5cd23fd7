"""flagedge reject N --env ENV -m WHY: an approver's no; the request closes, nothing written."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c
from proxy.commands import _review

HELP = "reject a change request (it closes; nothing is written)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _review.add_request_arguments(parser)
    parser.add_argument("--message", "-m", required=True, help="why (shown with the request)")
    c.add_author_argument(parser, "who rejects")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review
    from proxy.release.authorization import Actor

    request = review.reject(c.client(args), args.env, args.id, Actor.cli(c.author(args)),
                            args.message)
    print(f"request {request.id} rejected")
    return c.OK
