"""flagedge requests list|show N --env ENV: change requests (DESIGN §10)."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c
from proxy.commands import _review

HELP = "list change requests, or show one (its change, approvals and preview)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="requests, newest first (open ones unless --all)")
    c.add_env_argument(p)
    p.add_argument("--all", action="store_true", help="every state, not only open requests")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("show", help="one request")
    _review.add_request_arguments(p)
    p.add_argument("--json", action="store_true", help="the request object (DESIGN §10)")
    c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review

    client = c.client(args)
    if args.action == "show":
        _raw, request = review.get(client, args.env, args.id)
        if args.json:
            c.print_json(request.to_json())
        else:
            print("\n".join(_review.details(request, args.env, review.redis_now(client, args.env))))
        return c.OK
    rows = [r for r in review.list_requests(client, args.env) if args.all or r.state == "open"]
    if args.json:
        c.print_json([r.to_json() for r in rows])
    elif not rows:
        print(f"no {'' if args.all else 'open '}requests in {args.env}")
    else:
        print(f"{'ID':>5}  {'STATE':9}  {'AUTHOR':12}  {'OKS':>3}  CHANGES / MESSAGE")
        print("\n".join(_review.summary(r) for r in rows))
    return c.OK
