"""The one-line flag edits (release/oneliners.py) as pure functions: what each writes, what
it keeps, and the errors naming flag and variant."""

from __future__ import annotations

import pytest

from proxy.release.oneliners import FlagEditError, FlagOp, edit

FLAG = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "email"}, "a@b"]}, "on"]}}


def test_default_keeps_targeting_and_the_input():
    before = {**FLAG}
    out = edit("f", FLAG, FlagOp("default", variant="on"))
    assert out.flag == {**FLAG, "defaultVariant": "on"} and out.summary == "default variant on"
    assert before == FLAG and out.warnings == ()


def test_state_switches():
    assert edit("f", FLAG, FlagOp("disable")).flag["state"] == "DISABLED"
    assert edit("f", {**FLAG, "state": "DISABLED"}, FlagOp("enable")).flag["state"] == "ENABLED"
    assert FlagOp("disable").is_kill and not FlagOp("enable").is_kill


def test_percent_picks_the_other_variant_and_warns_when_replacing_targeting():
    out = edit("f", FLAG, FlagOp("percent", percent=20))
    assert out.flag["targeting"] == {"fractional": [["on", 20], ["off", 80]]}
    assert out.summary == "20% on" and "replaced" in out.warnings[0]
    again = edit("f", out.flag, FlagOp("percent", percent=40))
    assert again.warnings == ()  # a split replacing a split loses nothing


@pytest.mark.parametrize(("flag", "op", "words"), [
    (FLAG, FlagOp("default", variant="maybe"), ["flag f", "'maybe'", "off, on"]),
    (FLAG, FlagOp("percent", variant="off", percent=5), ["off", "default variant"]),
    (FLAG, FlagOp("percent", percent=-1), ["0 to 100"]),
    ({**FLAG, "variants": {"a": 1, "b": 2, "c": 3}, "defaultVariant": "a"},
     FlagOp("percent", percent=5), ["flag f", "a, b, c", "--variant"]),
    ({**FLAG, "defaultVariant": None}, FlagOp("percent", percent=5), ["no default variant"]),
    ({"state": "ENABLED"}, FlagOp("enable"), ["flag f has no variants"]),
])
def test_refusals_name_flag_and_variant(flag, op, words):
    with pytest.raises(FlagEditError) as caught:
        edit("f", flag, op)
    for word in words:
        assert word in str(caught.value)
