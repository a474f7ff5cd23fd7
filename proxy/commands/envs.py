"""flagedge envs list|delete|protect|unprotect."""

from __future__ import annotations

import argparse
import time
from typing import Any

from proxy.commands import _common as c

HELP = "list environments, delete one, or protect one (changes need approvals)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="environments with version, flag count, last writer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("delete", help="delete an environment's flags, metadata and history")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--yes", action="store_true", help="really delete (required)")
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)
    _add_policy_arguments(sub)


def _add_policy_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("protect", help="require approvals for changes (DESIGN §10): a push is "
                                       "refused (exit 7), changes go through flagedge propose")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--approvals", type=int, required=True, metavar="N",
                   help="approvals a change request needs (at least 1)")
    p.add_argument("--approvers", default=None, metavar="NAME,...",
                   help="only these people may approve (default: anyone but the author)")
    c.add_redis_arguments(p)
    p = sub.add_parser("unprotect", help="stop requiring approvals (pushes apply at once)")
    p.add_argument("env", metavar="ENV")
    c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher

    client = c.client(args)
    if args.action in ("protect", "unprotect"):
        return _protect(args, client)
    if args.action == "list":
        envs = publisher.list_envs(client)
        if args.json:
            c.print_json(envs)
        elif not envs:
            print("no environments")
        else:
            print(f"{'ENV':20}  {'VERSION':>7}  {'FLAGS':>5}  {'UPDATED (UTC)':19}  "
                  f"{'PROTECTED':9}  BY")
            for e in envs:
                when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["updated_at"]))
                        if e["updated_at"] else "-")
                print(f"{e['env']:20}  {e['version']:>7}  {e['flags']:>5}  {when:19}  "
                      f"{_protection(e['policy']):9}  {e['updated_by']}")
        return c.OK
    from proxy.storage.layout import check_env

    check_env(args.env)
    if not args.yes:
        c.err(f"refusing to delete environment {args.env} without --yes")
        return c.USAGE
    names = {e["env"] for e in publisher.list_envs(client)}
    if args.env not in names and not publisher.read_state(client, args.env).exists:
        raise LookupError(f"environment {args.env} does not exist")
    version = publisher.delete_env(client, args.env)
    print(f"deleted environment {args.env} (was at version {version})")
    c.wait_replicas(args, client)
    return c.OK


def _protect(args: argparse.Namespace, client: Any) -> int:
    """``envs protect`` / ``unprotect``: the policy hash (DESIGN §10)."""
    from proxy.release import review
    from proxy.release.authorization import Actor, may_manage
    from proxy.storage import policy
    from proxy.storage.layout import check_env

    check_env(args.env)
    review.check(may_manage(Actor.cli(c.default_author())))
    if args.action == "unprotect":
        policy.write(client, args.env, policy.Policy())
        print(f"{args.env} is not protected: pushes apply at once")
        return c.OK
    if args.approvals < 1:
        raise c.UsageError("--approvals must be 1 or more (use envs unprotect for none)")
    names = tuple(sorted({n.strip() for n in (args.approvers or "").split(",") if n.strip()}))
    if args.approvers is not None and not names:
        raise c.UsageError("--approvers needs at least one name")
    if names and len(names) < args.approvals:
        raise c.UsageError(f"--approvals {args.approvals} can never be met by "
                           f"{len(names)} approver(s)")
    policy.write(client, args.env, policy.Policy(args.approvals, names))
    who = f" from {', '.join(names)}" if names else ""
    print(f"{args.env} is protected: changes need {args.approvals} approval"
          f"{'s' if args.approvals != 1 else ''}{who} (flagedge propose)")
    return c.OK


def _protection(policy: dict[str, Any]) -> str:
    """``-``, ``2 approvals``, ``1 approval of ann, bob``."""
    n = policy["approvals"]
    if not n:
        return "-"
    who = f" of {', '.join(policy['approvers'])}" if policy["approvers"] else ""
    return f"{n} approval{'s' if n != 1 else ''}{who}"
