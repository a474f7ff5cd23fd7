"""Roles on admin key records (DESIGN §10): stored, parsed, back-compatible."""

from __future__ import annotations

import orjson
import pytest

from proxy.keys import ROLES, KeyRecord, parse_roles

H = "a" * 64


def test_parse_roles_sorted_distinct_and_strict():
    assert parse_roles("propose, approve,propose") == ("approve", "propose")
    with pytest.raises(ValueError, match="unknown role 'deploy'"):
        parse_roles("propose,deploy")
    with pytest.raises(ValueError, match="at least one"):
        parse_roles(" , ")


def test_roles_round_trip_and_old_records_hold_every_role():
    rec = KeyRecord(H[:12], "prod", "admin", "ann", 1.0, roles=("approve", "propose"))
    stored = orjson.dumps(rec.to_json())
    assert orjson.loads(stored)["roles"] == ["approve", "propose"]
    assert KeyRecord.from_json(H, stored) == rec
    old = KeyRecord.from_json(H, {"env": "prod", "kind": "admin", "name": "x"})
    assert old.roles is None and old.effective_roles == frozenset(ROLES)
    assert "roles" not in old.to_json()


def test_readers_hold_no_role_and_unknown_stored_roles_are_dropped():
    assert KeyRecord.from_json(H, {"env": "p", "kind": "client"}).effective_roles == frozenset()
    rec = KeyRecord.from_json(H, {"env": "p", "kind": "admin", "roles": ["kill", "future"]})
    assert rec.effective_roles == frozenset({"kill"})
    with pytest.raises(ValueError, match="roles"):
        KeyRecord.from_json(H, {"env": "p", "kind": "admin", "roles": "kill"})
