"""``flagedge envs protect|unprotect`` (DESIGN §10): an environment's release policy, and how
``envs list`` shows it."""

from __future__ import annotations

import argparse
from typing import Any

from proxy.commands import _common as c


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("protect", help="require approvals for changes (DESIGN §10): a push is "
                                       "refused (exit 7), changes go through flagedge propose")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--approvals", type=int, required=True, metavar="N",
                   help="approvals a change request needs (at least 1)")
    p.add_argument("--approvers", default=None, metavar="NAME,...",
                   help="only these people may approve (default: anyone but the author)")
    c.add_author_argument(p, "who protects it (needs the manage role)")
    c.add_redis_arguments(p)
    p = sub.add_parser("unprotect", help="stop requiring approvals (pushes apply at once)")
    p.add_argument("env", metavar="ENV")
    c.add_author_argument(p, "who unprotects it (needs the manage role)")
    c.add_redis_arguments(p)


def run(args: argparse.Namespace, client: Any) -> int:
    """``envs protect`` / ``unprotect``: write the policy hash."""
    from proxy.release import review
    from proxy.release.authorization import Actor, may_manage
    from proxy.storage import policy
    from proxy.storage.layout import check_env

    check_env(args.env)
    review.check(may_manage(Actor.cli(c.author(args))))
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


def protection(policy: dict[str, Any]) -> str:
    """``-``, ``2 approvals``, ``1 approval of ann, bob`` (``envs list``)."""
    n = policy["approvals"]
    if not n:
        return "-"
    who = f" of {', '.join(policy['approvers'])}" if policy["approvers"] else ""
    return f"{n} approval{'s' if n != 1 else ''}{who}"
