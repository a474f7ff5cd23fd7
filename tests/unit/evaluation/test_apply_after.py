"""documents.apply_after: one change's ``after`` applied to a FlagSet, recompiling only what
can differ. The Redis source and the in-process provider both apply changes through it."""

import pytest

from proxy.evaluation.documents import apply_after, compile_document
from proxy.model import InvalidDocument

ONOFF = {"on": True, "off": False}


def _flag(default: str = "on", targeting: dict | None = None) -> dict:
    flag = {"state": "ENABLED", "variants": ONOFF, "defaultVariant": default}
    if targeting is not None:
        flag["targeting"] = targeting
    return flag


BASE = compile_document({
    "flags": {"plain": _flag(), "gone": _flag(),
              "uses-e": _flag("off", {"if": [{"$ref": "e"}, "on", "off"]})},
    "$evaluators": {"e": {"==": [{"var": "plan"}, "pro"]}},
    "metadata": {"team": "web"},
}, version=3, epoch="ep")


def _apply(flags: dict, evaluators=None, metadata=None, **kw):
    return apply_after(BASE, flags, BASE.evaluators if evaluators is None else evaluators,
                       BASE.metadata if metadata is None else metadata, version=4,
                       epoch="ep", updated_at=10.0, **kw)


def test_named_flags_are_upserted_or_deleted_and_the_rest_kept_as_compiled():
    applied = _apply({"plain": _flag("off"), "gone": None, "new": _flag()})
    fs = applied.flag_set
    assert (fs.version, fs.epoch, fs.updated_at) == (4, "ep", 10.0)
    assert applied.upserted == {"plain", "new"} and applied.deleted == {"gone"}
    assert set(fs.flags) == {"plain", "uses-e", "new"}
    assert fs.flags["uses-e"] is BASE.flags["uses-e"]  # untouched: not compiled again
    assert fs.flags["plain"].raw["defaultVariant"] == "off"


def test_a_moved_evaluator_recompiles_the_flags_that_reference_it():
    applied = _apply({}, evaluators={"e": {"==": [{"var": "plan"}, "team"]}})
    assert applied.evaluators_changed == {"e"} and applied.upserted == {"uses-e"}
    assert applied.flag_set.flags["plain"] is BASE.flags["plain"]


def test_moved_set_metadata_recompiles_every_flag():
    applied = _apply({}, metadata={"team": "mobile"})
    assert applied.metadata_changed and applied.upserted == {"plain", "gone", "uses-e"}
    assert applied.flag_set.flags["plain"].metadata["team"] == "mobile"


def test_equal_in_python_but_not_in_canonical_json_is_a_change():
    applied = _apply({}, metadata={"team": "web", "n": 1})
    again = apply_after(applied.flag_set, {}, applied.flag_set.evaluators, {"team": "web", "n": 1.0},
                        version=5, epoch="ep", updated_at=11.0)
    assert again.metadata_changed


def test_the_default_compiler_raises_on_a_bad_flag():
    with pytest.raises(InvalidDocument):
        _apply({"bad": {"state": "ENABLED", "variants": ONOFF, "defaultVariant": "nope"}})


def test_a_lenient_compiler_keeps_the_replaced_flag():
    def keep_old(key, raw, evaluators, metadata, replaced, fractional_hash):
        return replaced

    applied = _apply({"plain": _flag("off"), "new": _flag()}, compile_one=keep_old)
    assert applied.upserted == set() and "new" not in applied.flag_set.flags
    assert applied.flag_set.flags["plain"] is BASE.flags["plain"]


def _derived(fs):
    return (fs.uses_timestamp, fs.boundaries, fs.reads, fs.experiments)


CHANGES = [  # one change each, applied in turn: (key, new definition)
    ("plain", _flag("off")),  # a default variant: nothing derived moves
    ("uses-e", _flag("on", {"if": [{"$ref": "e"}, "off", "on"]})),  # other outcomes, same reads
    ("plain", _flag("on", {"if": [{"==": [{"var": "country"}, "DE"]}, "on", "off"]})),  # reads
    ("plain", _flag("on", {"if": [{"==": [{"var": "country"}, "FR"]}, "on", "off"]})),
    ("gone", _flag("on", {"if": [{">": [{"var": "$flagd.timestamp"}, 2000000000]},
                                 "on", "off"]})),  # a boundary
    ("gone", {**_flag("on", {"fractional": [["on", 50], ["off", 50]]}),
              "metadata": {"kind": "experiment"}}),  # an experiment
    ("gone", {**_flag("on", {"fractional": [["on", 10], ["off", 90]]}),
              "metadata": {"kind": "experiment"}}),
    ("gone", _flag("off")),  # static again
    ("new", _flag()),  # added
    ("new", None),  # deleted
]


def test_derived_parts_equal_a_fresh_computation_and_are_copied_when_nothing_moves():
    """A change that leaves every flag's share of them alone keeps the previous set's derived
    parts (the same objects: nothing computed over every flag); any other computes them
    again. Either way they are what the whole document compiled afresh gives."""
    fs, copied = BASE, []
    for version, (key, raw) in enumerate(CHANGES, start=4):
        new = apply_after(fs, {key: raw}, fs.evaluators, fs.metadata, version=version,
                          epoch="ep", updated_at=10.0).flag_set
        fresh = compile_document(new.to_document(), version=version, epoch="ep")
        assert _derived(new) == _derived(fresh), (key, raw)
        if new.reads is fs.reads and new.reads is not None:
            copied.append(key)
        fs = new
    assert copied == ["plain", "uses-e", "plain", "gone"]
