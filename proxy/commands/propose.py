"""flagedge propose FILE --env ENV -m MSG: a change request instead of a push (DESIGN §10)."""

from __future__ import annotations

import argparse

from proxy.commands import _common as c

HELP = "propose a flag file as a change request (needs approvals before it is applied)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="flagd flag-definition JSON (- for stdin)")
    c.add_env_argument(parser)
    parser.add_argument("--message", "-m", required=True, help="what and why (shown to "
                        "approvers, kept in the change log)")
    parser.add_argument("--expires", default="7d", metavar="DURATION",
                        help="open for this long, then expired (30s, 5m, 1h, 2d; default 7d)")
    parser.add_argument("--at", default=None, metavar="TIME",
                        help="apply no earlier than TIME (ISO 8601 with offset, or +DURATION); "
                             "stored as apply_at: the release worker applies it when due")
    parser.add_argument("--supersedes", type=int, metavar="N", default=None,
                        help="this request replaces open request N (an edit: N is cancelled, "
                             "its approvals do not carry over)")
    c.add_author_argument(parser, "who proposes")
    parser.add_argument("--json", action="store_true", help="print the request object")
    c.add_redis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher, review
    from proxy.release.authorization import Actor
    from proxy.release.changeset import describe
    from proxy.release.times import parse_duration, parse_time
    from proxy.storage.layout import check_env

    check_env(args.env)
    expires_in = parse_duration(args.expires)
    new = publisher.parse_file(args.file)
    client = c.client(args)
    apply_at = parse_time(args.at, review.redis_now(client, args.env)) if args.at else None
    state, plan = publisher.diff(client, args.env, new)
    if args.supersedes is not None:  # before writing anything: it must exist and be open
        _raw, old = review.get(client, args.env, args.supersedes)
        if old.state != "open":
            raise review.NotOpen(old)
    if plan.empty:
        print(f"nothing to propose: {args.env} at version {state.version} already has these "
              "rules")
        return c.OK
    review.expire_due(client, args.env)  # tidy: the release worker will do this too
    request = review.propose_plan(client, args.env, state, plan, actor=Actor.cli(c.author(args)),
                                  message=args.message, expires_in=expires_in,
                                  apply_at=apply_at)
    superseded = ""
    if args.supersedes is not None:
        try:
            review.supersede(client, args.env, args.supersedes, request,
                             Actor.cli(c.author(args)))
            superseded = f"request {args.supersedes} superseded (cancelled)"
        except review.NotOpen as exc:  # closed meanwhile: the new request stands
            superseded = f"request {args.supersedes} not superseded: {exc}"
    if args.json:
        c.print_json(request.to_json())
    else:
        print("\n".join(describe(plan, args.env)))
        if superseded:
            print(superseded)
        print(f"request {request.id}")
    return c.OK
