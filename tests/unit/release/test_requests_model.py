"""release/requests.py: the change (a diff in the change log's shape), its content hash,
what it reads, and the request's JSON as the Lua scripts rely on it."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.release.changeset import Document, make_plan
from proxy.release.requests import (
    Approval,
    Request,
    applied_to,
    change_of,
    content_hash,
    plan_of,
    referenced_evaluators,
)

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}
REF = {**ON, "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}}
BASE = Document({"a": ON, "b": ON, "r": REF},
                {"beta": {"in": ["x", {"$ref": "names"}]}, "names": ["x"], "other": 1},
                {"team": "web"})


def test_change_is_the_change_logs_before_and_after_plus_what_it_reads():
    new = Document({"a": OFF, "c": ON, "r": REF}, BASE.evaluators, BASE.metadata)
    change = change_of(make_plan(BASE, new), BASE)
    assert change["before"] == {"flags": {"a": ON, "b": ON, "c": None}}
    assert change["after"] == {"flags": {"a": OFF, "b": None, "c": ON}}
    # reads no evaluator (r is not touched), the set metadata always
    assert change["reads"] == {"$evaluators": {}, "metadata": {"team": "web"}}


def test_reads_follow_refs_through_evaluators_and_name_missing_ones():
    new = Document({**BASE.flags, "r": {**REF, "defaultVariant": "off"}}, BASE.evaluators)
    change = change_of(make_plan(BASE, new), BASE)
    assert change["reads"]["$evaluators"] == {"beta": BASE.evaluators["beta"], "names": ["x"]}
    flag = {**ON, "targeting": {"if": [{"$ref": "gone"}, "on", "off"]}}
    assert referenced_evaluators({"before": {"flags": {"x": None}},
                                  "after": {"flags": {"x": flag}}}, {}) == ["gone"]


def test_evaluator_and_metadata_changes_carry_the_complete_maps():
    new = Document(BASE.flags, {**BASE.evaluators, "other": 2}, {"team": "api"})
    change = change_of(make_plan(BASE, new), BASE)
    assert change["before"]["$evaluators"] == BASE.evaluators
    assert change["after"]["$evaluators"] == new.evaluators
    assert change["after"]["metadata"] == {"team": "api"}


flag_values = st.fixed_dictionaries({"state": st.sampled_from(["ENABLED", "DISABLED"]),
                                     "variants": st.just({"on": True, "off": False}),
                                     "defaultVariant": st.sampled_from(["on", "off"])})
flag_maps = st.dictionaries(st.sampled_from("abcdef"), flag_values, max_size=6)


@given(flag_maps, flag_maps, st.booleans())
def test_plan_round_trips_and_applying_the_change_gives_the_new_document(old, new, meta):
    base = Document(old, {}, {"m": 1})
    target = Document(new, {}, {"m": 2} if meta else {"m": 1})
    plan = make_plan(base, target)
    change = change_of(plan, base)
    assert plan_of(change) == plan
    assert applied_to(base, change) == target


def test_content_hash_is_stable_and_covers_env_base_and_change():
    change = change_of(make_plan(BASE, Document({**BASE.flags, "a": OFF}, BASE.evaluators,
                                                BASE.metadata)), BASE)
    h = content_hash("prod", 3, change)
    assert h.startswith("sha256:") and len(h) == 7 + 64
    # key order is not content
    reordered = orjson.loads(orjson.dumps(change, option=orjson.OPT_SORT_KEYS))
    assert content_hash("prod", 3, reordered) == h
    assert content_hash("staging", 3, change) != h
    assert content_hash("prod", 4, change) != h
    other = {**change, "after": {"flags": {"a": {**OFF, "defaultVariant": "on"}}}}
    assert content_hash("prod", 3, other) != h
    # 1 vs 1.0 is a different rule (canonical JSON keeps the difference)
    one = {"before": {"flags": {}}, "after": {"flags": {"a": {"v": 1}}}}
    assert content_hash("p", 0, one) != content_hash(
        "p", 0, {"before": {"flags": {}}, "after": {"flags": {"a": {"v": 1.0}}}})


def request(**fields) -> Request:
    base = dict(id=7, state="open", base_version=3, author="ann", message="m",
                created_at=1.5, expires_at=100.25, change={"before": {"flags": {}},
                                                           "after": {"flags": {}}},
                content_hash="sha256:x", preview={"version": 3})
    return Request(**{**base, **fields})


def test_request_json_has_design_fields_in_order_and_round_trips():
    r = request(approvals=(Approval("bob", 2.0, "sha256:x"),), apply_at=50.0,
                applied_version=4)
    doc = r.to_json()
    assert list(doc) == ["id", "state", "base_version", "author", "message", "created_at",
                         "expires_at", "apply_at", "change", "content_hash", "preview",
                         "approvals", "applied_version"]
    assert Request.from_json(r.dumps()) == r
    assert "apply_at" not in request().to_json() and "reason" not in request().to_json()


def test_head_and_body_are_what_the_scripts_complete():
    r = request()
    assert orjson.loads(r.head() + b',"applied_version":9}')["applied_version"] == 9
    assert orjson.loads(b'{"id":12,' + r.body_without_id())["id"] == 12


def test_valid_approvers_count_like_the_apply_script():
    r = request(approvals=(Approval("bob", 1, "sha256:x"), Approval("ann", 1, "sha256:x"),
                           Approval("carol", 1, "sha256:old"), Approval("bob", 2, "sha256:x"),
                           Approval("dave", 1, "sha256:x")))
    assert r.valid_approvers() == ["bob", "dave"]
    assert r.valid_approvers(["dave", "carol"]) == ["dave"]


@pytest.mark.parametrize("bad", [b"{}", b'{"id": "x"}', b"[]"])
def test_not_a_request(bad):
    with pytest.raises(ValueError, match="not a change request"):
        Request.from_json(bad)
