"""release/authorization.py: who may do what, with a reason when not (DESIGN §10)."""

from __future__ import annotations

import pytest

from proxy.keys import ROLES, KeyRecord
from proxy.release import authorization as authz
from proxy.release.authorization import Actor, Mark, Route, WriteKind
from proxy.storage.policy import Policy

OPEN, PROTECTED = Policy(), Policy(2)


def actor(*roles: str, name: str = "ann") -> Actor:
    return Actor(name, frozenset(roles))


def test_cli_caller_holds_every_role():
    assert Actor.cli("ann").roles == frozenset(ROLES)


def test_key_actor_takes_name_and_roles_and_old_admin_keys_hold_all():
    limited = KeyRecord("x" * 12, "prod", "admin", "bob", 0.0, roles=("approve",))
    assert Actor.of_key(limited) == Actor("bob", frozenset({"approve"}))
    legacy = KeyRecord("y" * 12, "prod", "admin", "carol", 0.0)
    assert Actor.of_key(legacy).roles == frozenset(ROLES)
    reader = KeyRecord("z" * 12, "prod", "server", "svc", 0.0)
    assert Actor.of_key(reader).roles == frozenset()


def test_push_unprotected_is_direct_for_a_proposer_refused_without_the_role():
    assert authz.write_route(actor("propose"), OPEN) == authz.Decision(True)
    d = authz.write_route(actor("view"), OPEN)
    assert not d and d.route is Route.REFUSED and "needs the propose role" in d.reason


def test_push_protected_needs_approval_even_for_every_role():
    d = authz.write_route(Actor.cli("ann"), PROTECTED)
    assert not d and d.reason == authz.APPROVAL_REQUIRED
    assert "flagedge propose" in d.reason


def test_break_glass_needs_manage_and_a_reason_and_is_marked():
    d = authz.write_route(Actor.cli("ann"), PROTECTED, break_glass=True, reason="outage")
    assert d and d.route is Route.DIRECT and d.mark is Mark.BREAK_GLASS
    assert not authz.write_route(Actor.cli("ann"), PROTECTED, break_glass=True, reason=" ")
    d = authz.write_route(actor("propose", "kill"), PROTECTED, break_glass=True, reason="x")
    assert not d and "manage" in d.reason
    # unprotected: allowed, nothing to mark
    assert authz.write_route(Actor.cli("a"), OPEN, break_glass=True, reason="x").mark is None


def test_kill_operations_direct_for_kill_holders_else_a_request():
    d = authz.write_route(actor("kill"), PROTECTED, WriteKind.KILL)
    assert d and d.route is Route.DIRECT and d.mark is Mark.KILL
    d = authz.write_route(actor("propose"), PROTECTED, WriteKind.KILL)
    assert d and d.route is Route.REQUEST
    assert not authz.write_route(actor("view"), PROTECTED, WriteKind.KILL)
    assert authz.write_route(actor("kill"), OPEN, WriteKind.KILL).mark is None


def test_approve_rules():
    policy = Policy(1, ("bob", "carol"))
    assert authz.may_approve(actor("approve", name="bob"), "ann", policy)
    d = authz.may_approve(actor("approve", name="ann"), "ann", OPEN)
    assert not d and "may not approve" in d.reason
    d = authz.may_approve(actor("approve", name="dave"), "ann", policy)
    assert not d and "not an approver" in d.reason and "bob, carol" in d.reason
    d = authz.may_approve(actor("propose", name="bob"), "ann", policy)
    assert not d and "approve role" in d.reason
    d = authz.may_approve(actor("approve", name="bob"), "ann", policy, approved_by=["bob"])
    assert not d and "already approved" in d.reason


@pytest.mark.parametrize(("who", "roles", "allowed"), [
    ("ann", ("propose",), True),  # the author withdraws
    ("bob", ("propose", "approve"), False),  # someone else's
    ("bob", ("manage",), True),  # a manager may cancel anyone's
    ("ann", ("view",), False),  # the author without propose
])
def test_cancel(who, roles, allowed):
    assert bool(authz.may_cancel(actor(*roles, name=who), "ann")) is allowed


def test_reject_needs_approve_and_not_the_author():
    assert authz.may_reject(actor("approve", name="bob"), "ann")
    assert "cancel it instead" in authz.may_reject(actor("approve", name="ann"), "ann").reason
    assert not authz.may_reject(actor("propose", name="bob"), "ann")


def test_manage_and_view():
    assert authz.may_manage(actor("manage"))
    assert "manage role" in authz.may_manage(actor("approve")).reason
    assert authz.may_view(actor("view")) and not authz.may_view(actor())
