"""flagedge cancel N --env ENV: withdraw a change request; nothing written."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c
from proxy.commands import _review

HELP = "cancel a change request (its author withdraws it; nothing is written)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _review.add_request_arguments(parser)
    c.add_author_argument(parser, "who cancels")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review
    from proxy.release.authorization import Actor

    request = review.cancel(c.client(args), args.env, args.id, Actor.cli(c.author(args)))
    print(f"request {request.id} cancelled")
    return c.OK
