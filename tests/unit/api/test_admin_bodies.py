"""The admin API's body and header parsing (pure): each bad input is refused naming the
field, each good one becomes what release/ takes."""

from __future__ import annotations

import orjson
import pytest
from starlette.responses import Response

from proxy.api.admin_calls import BadField, failure, field
from proxy.api.admin_flags import operation
from proxy.api.admin_release import if_match, requested_policy
from proxy.model import InvalidDocument, Problem
from proxy.release.publisher import ApprovalRequired, ConflictError
from proxy.release.review import Refused
from proxy.storage.policy import Policy


def test_field_checks_presence_and_type_and_names_the_field():
    assert field({"n": 3}, "n", int) == 3
    assert field({}, "n", int, 7) == 7
    with pytest.raises(BadField, match="n: required"):
        field({}, "n", int, required=True)
    with pytest.raises(BadField, match="n: expected an integer, got a boolean"):
        field({"n": True}, "n", int)
    with pytest.raises(BadField, match="url: expected a string, got int"):
        field({"url": 1}, "url", str)


def test_if_match_takes_the_etag_or_a_bare_version():
    assert if_match(None) is None
    assert if_match('"12"') == 12
    assert if_match("12") == 12
    for bad in ('W/"12"', "*", '"v1"', ""):
        with pytest.raises(BadField, match="If-Match"):
            if_match(bad)


def test_policy_bodies():
    assert requested_policy({"approvals": 0}) == Policy()
    assert requested_policy({"approvals": 2, "approvers": ["b", "a", "b "]}) == Policy(
        2, ("a", "b"))
    with pytest.raises(ValueError, match="never be met"):
        requested_policy({"approvals": 3, "approvers": ["a", "b"]})
    with pytest.raises(ValueError, match="has none"):
        requested_policy({"approvals": 0, "approvers": ["a"]})
    with pytest.raises(BadField, match="approvers"):
        requested_policy({"approvals": 1, "approvers": [1]})
    with pytest.raises(BadField, match="approvals: required"):
        requested_policy({})


def test_flag_operations():
    assert operation({"op": "percent", "percent": 25}).percent == 25
    assert operation({"op": "disable"}).is_kill
    for body, what in [({"op": "explode"}, "op: one of"), ({"op": "percent"}, "percent"),
                       ({"op": "default"}, "variant"), ({"op": "enable", "percent": 3}, "no")]:
        with pytest.raises(BadField, match=what):
            operation(body)


def status_and_body(response: Response | None) -> tuple[int, dict]:
    assert response is not None
    return response.status_code, orjson.loads(response.body)


def test_release_failures_become_their_http_answers():
    status, body = status_and_body(failure(ApprovalRequired("prod", 2, "use X"), "prod"))
    assert status == 409 and body["errorCode"] == "APPROVAL_REQUIRED"
    assert body["next"] == "POST /v1/admin/envs/prod/requests"
    status, body = status_and_body(failure(InvalidDocument([Problem("document: flags.a",
                                                                    "bad")]), "prod"))
    assert status == 422 and body["problems"] == [{"path": "document: flags.a",
                                                   "message": "bad"}]
    assert status_and_body(failure(Refused("needs the approve role"), "p"))[0] == 403
    assert status_and_body(failure(ConflictError("p", 1, 2), "p"))[1]["version"] == 2
    assert status_and_body(failure(LookupError("no request 9"), "p"))[0] == 404
    assert status_and_body(failure(BadField("x: required"), "p"))[0] == 400
    assert status_and_body(failure(ValueError("no variant"), "p"))[0] == 422
    assert failure(RuntimeError("bug"), "p") is None  # not ours: a 500, logged


def test_a_revoked_key_leaves_this_process_key_ring_with_the_answer():
    from proxy.api.admin_calls import AdminCalls
    from proxy.api.admin_keys import KeysApi
    from proxy.config import Settings
    from proxy.keys import KeyRecord, KeyRing

    ring = KeyRing()
    ring.replace_all({"a" * 64: KeyRecord("a" * 12, "prod", "admin", "ann", 0.0),
                      "b" * 64: KeyRecord("b" * 12, "prod", "admin", "bob", 0.0)})
    KeysApi(AdminCalls(Settings(), None, ring)).forget("a" * 12)  # type: ignore[arg-type]
    assert ring.by_id("a" * 12) is None and ring.by_id("b" * 12) is not None


def test_a_key_revoked_after_it_was_identified_gets_no_roles_not_every_role():
    from proxy.api.admin_calls import AdminCalls
    from proxy.api.auth import Authenticator
    from proxy.api.tokens import StreamTokens
    from proxy.config import Settings
    from proxy.keys import KeyRecord, KeyRing

    ring = KeyRing()
    ring.replace_all({"a" * 64: KeyRecord("a" * 12, "prod", "admin", "ann", 0.0,
                                          roles=("view",))})
    calls = AdminCalls(Settings(), Authenticator(ring, StreamTokens(b"k" * 32)), ring)
    assert calls._actor("a" * 12, "ann").roles == frozenset({"view"})
    assert calls._actor("b" * 12, "bob") is None  # gone from the ring: refused (401)
    trusting = AdminCalls(Settings(), Authenticator(ring, StreamTokens(b"k" * 32),
                                                    no_auth=True), ring)
    assert trusting._actor("no-auth", "no-auth").holds("manage")
