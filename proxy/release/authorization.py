"""Who may do what to an environment (DESIGN §10): the ONE place that decides, for the CLI now
and for the admin API and the UI later. Pure: callers pass the actor, the environment's
policy and, for request actions, the request's author; every refusal carries a reason a
person can act on.

Roles (of admin keys; ``proxy.keys.ROLES``):

- ``view``: read history, requests and policy.
- ``propose``: create requests; cancel one's own.
- ``approve``: approve or reject others' requests (only listed approvers, when the policy
  names them).
- ``kill``: the kill operations (rollback, and later ``flag --disable``, rollout pause and
  abort) applied at once even where the environment is protected, marked ``kill``.
- ``manage``: policy, keys, webhooks, cancelling anyone's request, and ``--break-glass``
  (any write applied at once in a protected environment, marked ``break_glass``).

Every write needs ``propose`` at least (a direct push where the environment is not protected
is a change someone proposes and applies at once). CLI callers write Redis directly: they are
trusted operators holding every role (:meth:`Actor.cli`), so for them the checks that matter
are the policy's (a protected environment routes a push to a request) and the guards against
mistakes (self-approval); they are not a control (the README says so).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.keys import ROLES, KeyRecord
from proxy.storage.policy import Policy


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a person's name (an admin key's ``name``, or the CLI's ``--author``) and the
    roles they hold."""

    name: str
    roles: frozenset[str]

    @classmethod
    def cli(cls, name: str) -> Actor:
        """A CLI caller: writes Redis directly, so holds every role (DESIGN §10)."""
        return cls(name, frozenset(ROLES))

    @classmethod
    def of_key(cls, record: KeyRecord) -> Actor:
        """An admin API caller: the key's name and the roles on its record."""
        return cls(record.name, record.effective_roles)

    def holds(self, role: str) -> bool:
        return role in self.roles


class Route(enum.Enum):
    """How a write reaches an environment."""

    DIRECT = "direct"  # written at once, as an ordinary versioned change
    REQUEST = "request"  # becomes a change request that needs approvals
    REFUSED = "refused"


class Mark(enum.Enum):
    """What a direct write in a protected environment is marked with in the change entry."""

    KILL = "kill"
    BREAK_GLASS = "break_glass"


class WriteKind(enum.Enum):
    CHANGE = "change"  # push, and later flag one-liners that are not kill operations
    KILL = "kill"  # rollback, and later flag --disable, rollout --pause|--abort


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not (or, for a request route, why a request)
    route: Route = Route.DIRECT
    mark: Mark | None = None

    def __bool__(self) -> bool:
        return self.allowed


def _missing(actor: Actor, role: str, what: str) -> Decision:
    return Decision(False, f"{actor.name or 'this caller'} may not {what}: it needs the "
                           f"{role} role", Route.REFUSED)


APPROVAL_REQUIRED = "approval required: use flagedge propose"


def write_route(actor: Actor, policy: Policy, kind: WriteKind = WriteKind.CHANGE, *,
                break_glass: bool = False, reason: str = "") -> Decision:
    """A write to an environment: applied at once, routed to a request, or refused.

    Unprotected: direct for a ``propose`` holder (or a ``kill`` holder's kill operation).
    Protected: a ``manage`` holder's ``--break-glass`` with a reason is direct, marked
    break_glass; a ``kill`` holder's kill operation is direct, marked kill; a change
    (push) is refused (exit 7, "approval required"); a kill operation by someone without
    ``kill`` becomes a request, if they may propose.
    """
    if break_glass:
        if not reason.strip():
            return Decision(False, "--break-glass needs a reason: -m WHY", Route.REFUSED)
        if not actor.holds("manage"):
            return _missing(actor, "manage", "break glass")
        return Decision(True, route=Route.DIRECT,
                        mark=Mark.BREAK_GLASS if policy.protected else None)
    if kind is WriteKind.KILL and actor.holds("kill"):
        return Decision(True, route=Route.DIRECT, mark=Mark.KILL if policy.protected else None)
    if not actor.holds("propose"):
        return _missing(actor, "propose", "change this environment")
    if not policy.protected:
        return Decision(True, route=Route.DIRECT)
    if kind is WriteKind.KILL:
        return Decision(True, "the environment is protected", Route.REQUEST)
    return Decision(False, APPROVAL_REQUIRED, Route.REFUSED)


def may_propose(actor: Actor) -> Decision:
    return Decision(True) if actor.holds("propose") else _missing(actor, "propose", "propose")


def may_view(actor: Actor) -> Decision:
    return Decision(True) if actor.roles else _missing(actor, "view", "view")


def may_approve(actor: Actor, author: str, policy: Policy,
                approved_by: Iterable[str] = ()) -> Decision:
    """An approval of a request by ``author``: needs the approve role, another name than the
    author's, and a place on the policy's approvers list when it has one."""
    if not actor.holds("approve"):
        return _missing(actor, "approve", "approve")
    if actor.name == author:
        return Decision(False, f"{actor.name} proposed this request and may not approve it "
                               "(someone else must)", Route.REFUSED)
    if policy.approvers and actor.name not in policy.approvers:
        return Decision(False, f"{actor.name} is not an approver of this environment "
                               f"(approvers: {', '.join(policy.approvers)})", Route.REFUSED)
    if actor.name in set(approved_by):
        return Decision(False, f"{actor.name} already approved this request", Route.REFUSED)
    return Decision(True)


def may_reject(actor: Actor, author: str) -> Decision:
    """Rejecting is an approver's "no" (the author withdraws with cancel instead)."""
    if not actor.holds("approve"):
        return _missing(actor, "approve", "reject")
    if actor.name == author:
        return Decision(False, f"{actor.name} proposed this request: cancel it instead of "
                               "rejecting it", Route.REFUSED)
    return Decision(True)


def may_cancel(actor: Actor, author: str) -> Decision:
    """The author withdraws their own request; a ``manage`` holder may cancel anyone's."""
    if actor.holds("manage"):
        return Decision(True)
    if actor.name == author and actor.holds("propose"):
        return Decision(True)
    return Decision(False, f"{actor.name or 'this caller'} may not cancel a request by "
                           f"{author}: only its author or a manage holder", Route.REFUSED)


def may_manage(actor: Actor, what: str = "change the policy") -> Decision:
    return Decision(True) if actor.holds("manage") else _missing(actor, "manage", what)
