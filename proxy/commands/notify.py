"""flagedge notify add|list|remove|test|failed --env ENV: webhooks told of every change and
request event of an environment (DESIGN §10; delivered by every `serve`)."""

from __future__ import annotations

import argparse
import time

from proxy.commands import _common as c

HELP = "webhooks notified of changes and change requests (signed, Standard Webhooks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("add", help="add a webhook; prints its id and signing secret once")
    p.add_argument("url", metavar="URL", help="http(s) URL the messages are POSTed to")
    c.add_env_argument(p)
    p.add_argument("--format", choices=("json", "slack"), default="json",
                   help="json: the Standard Webhooks message (default); slack: {\"text\": ...} "
                        "for a Slack incoming webhook")
    p.add_argument("--secret", default=None, metavar="S",
                   help="signing secret: whsec_<base64> (Standard Webhooks) or any string "
                        "(its bytes); default: a new whsec_ secret, printed once")
    p.add_argument("--allow-private", action="store_true",
                   help="allow a URL resolving to private or loopback addresses (refused by "
                        "default: SSRF)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_author_argument(p, "who adds it (needs the manage role)")
    c.add_redis_arguments(p)
    p = sub.add_parser("list", help="the environment's webhooks (never their secrets)")
    c.add_env_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("remove", help="remove a webhook by id")
    p.add_argument("id", metavar="ID", help="webhook id (wh_..., from notify list)")
    c.add_env_argument(p)
    c.add_author_argument(p, "who removes it (needs the manage role)")
    c.add_redis_arguments(p)
    p = sub.add_parser("test", help="send a signed test message to a webhook now and say "
                                    "what it answered (exit 1 unless 2xx)")
    p.add_argument("id", metavar="ID", help="webhook id (wh_..., from notify list)")
    c.add_env_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_author_argument(p, "who sends it (needs the manage role)")
    c.add_redis_arguments(p)
    p = sub.add_parser("failed", help="deliveries given up after their retries, newest first")
    c.add_env_argument(p)
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import review, webhook_test, webhooks
    from proxy.release.authorization import Actor, may_manage
    from proxy.storage.layout import check_env

    check_env(args.env)
    client = c.client(args)
    if args.action in ("add", "remove", "test"):
        review.check(may_manage(Actor.cli(c.author(args))))
    if args.action == "add":
        hook = webhooks.add(client, args.env, args.url, fmt=args.format, secret=args.secret,
                            allow_private=args.allow_private, created_by=c.author(args))
        if args.json:
            c.print_json(hook.to_json())
        else:
            print(f"webhook {hook.id} added for {args.env}: {hook.url} ({hook.format})")
            print(f"signing secret (shown once): {hook.secret}")
        return c.OK
    if args.action == "remove":
        webhooks.remove(client, args.env, args.id)
        print(f"webhook {args.id} removed")
        return c.OK
    if args.action == "test":
        sent = webhook_test.send_test(client, args.env, args.id, c.author(args))
        if args.json:
            c.print_json(sent.to_json())
        else:
            said = "delivered" if sent.delivered else f"not delivered: {sent.error}"
            print(f"test message to webhook {args.id}: {said} ({sent.ms:.0f} ms)")
        return c.OK if sent.delivered else 1
    if args.action == "list":
        hooks = webhooks.list_webhooks(client, args.env)
        if args.json:
            c.print_json([h.public_json() for h in hooks])
        if not hooks and not args.json:
            print(f"no webhooks for {args.env}")
        for h in hooks if not args.json else []:
            private = " allow-private" if h.allow_private else ""
            print(f"{h.id}  {h.format:5}  {h.url}{private}  (added {_when(h.created_at)} "
                  f"by {h.created_by or '?'})")
        return c.OK
    rows = webhooks.failed(client, args.env, max(1, args.limit))
    if args.json:
        c.print_json(rows)
    if not rows and not args.json:
        print(f"no failed deliveries for {args.env}")
    for r in rows if not args.json else []:
        print(f"{_when(float(r.get('at', 0)))}  {r.get('webhook')}  {r.get('type')}  "
              f"webhook-id {r.get('webhook_id')}  {r.get('attempts')} attempts: "
              f"{r.get('error')}  {r.get('url')}")
    return c.OK


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
