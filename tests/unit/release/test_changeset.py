from proxy.model import canonical
from proxy.release.changeset import Document, describe, flag_changes, make_plan

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}


def test_plan_sees_added_changed_removed_and_ignores_formatting():
    old = Document({"a": ON, "b": ON, "c": {"variants": {"on": True, "off": False},
                                            "defaultVariant": "on", "state": "ENABLED"}})
    new = Document({"a": {**ON, "state": "DISABLED"}, "c": ON, "d": ON},
                   evaluators={"x": {"==": [1, 1]}})
    plan = make_plan(old, new)
    assert set(plan.added) == {"d"}
    assert set(plan.changed) == {"a"}
    assert set(plan.removed) == {"b"}
    assert plan.evaluators == ({}, {"x": {"==": [1, 1]}})
    assert plan.metadata is None
    assert plan.touched == ["a", "b", "d"]
    assert set(plan.upserts()) == {"a", "d"}
    assert plan.upserts()["d"] == canonical(ON)
    assert make_plan(new, new).empty


def test_numbers_and_bools_are_not_conflated():
    a = {**ON, "variants": {"on": 1, "off": 0}}
    b = {**ON, "variants": {"on": 1.0, "off": 0}}
    assert not make_plan(Document({"f": a}), Document({"f": b})).empty


def test_flag_changes_are_readable():
    new = {**ON, "defaultVariant": "off", "variants": {"on": True, "off": False, "x": True},
           "targeting": {"if": [True, "on"]}}
    lines = flag_changes(ON, new)
    assert 'defaultVariant: "on" -> "off"' in lines
    assert "variant x added: true" in lines
    assert any(line.startswith("targeting added") for line in lines)
    text = "\n".join(describe(make_plan(Document({"f": ON}), Document({"f": new, "g": ON})),
                              "prod"))
    assert "~ f" in text and "+ g" in text and "1 added, 1 changed, 0 removed" in text
    assert describe(make_plan(Document({}), Document({})), "prod") == [
        "no changes for environment prod"]
