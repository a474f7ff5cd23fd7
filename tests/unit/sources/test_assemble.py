"""Snapshot building from stored JSON: invalid flags rejected alone, reuse, dependents."""

import orjson

from proxy.model import ErrorCode, canonical
from proxy.sources.assemble import apply_change, build_full

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
REF = {**ON, "targeting": {"if": [{"$ref": "beta"}, "off", None]}}


def meta(version: int, **extra: object) -> dict[str, str]:
    out = {"version": str(version), "epoch": "e1", "updated_at": "100.5"}
    out.update({k: v if isinstance(v, str) else orjson.dumps(v).decode()
                for k, v in extra.items()})
    return out


def test_full_build_rejects_bad_flags_alone_and_keeps_their_last_good_version():
    fs, change, rej = build_full("prod", {"a": canonical(ON), "b": canonical(ON)}, meta(1),
                                 None)
    assert set(fs.flags) == {"a", "b"} and fs.version == 1 and fs.epoch == "e1"
    assert change.reset and change.upserted == {"a", "b"} and rej.count == 0
    assert change.written_at is None  # a load is no propagation sample...
    _fs, triggered, _r = build_full("prod", {"a": canonical(ON)}, meta(2), fs, 123.0)
    assert triggered.written_at == 123.0  # ...unless an entry triggered it
    stored = {"a": b"{nope", "b": canonical({**ON, "state": "MAYBE"}), "c": canonical(ON)}
    fs2, change2, rej2 = build_full("prod", stored, meta(2), fs)
    assert fs2.flags["a"] is fs.flags["a"] and fs2.flags["b"] is fs.flags["b"]
    assert set(fs2.flags) == {"a", "b", "c"} and rej2.count == 2
    assert {flag for flag, _ in rej2.problems} == {"a", "b"}
    assert any(p.path.startswith("flags.b") for _, p in rej2.problems)
    assert change2.upserted == {"c"} and not change2.deleted


def test_full_build_reuses_unchanged_flags_and_reports_deletions():
    fs, _c, _r = build_full("prod", {"a": canonical(ON), "b": canonical(ON)}, meta(1), None)
    fs2, change, _r = build_full("prod", {"a": orjson.dumps(ON)}, meta(2), fs)
    assert fs2.flags["a"] is fs.flags["a"]  # same JSON, reformatted: not recompiled
    assert change.deleted == {"b"} and not change.upserted


def test_apply_change_upserts_deletes_and_recompiles_dependents_of_evaluators():
    evaluators = {"beta": {"in": [{"var": "email"}, ["a@x"]]}}
    fs, _c, rej = build_full("prod", {"r": canonical(REF), "s": canonical(ON)},
                             meta(1, evaluators=evaluators), None)
    assert rej.count == 0 and "beta" in fs.flags["r"].refs
    after = {"flags": {"s": None, "t": ON},
             "$evaluators": {"beta": {"in": [{"var": "email"}, ["b@x"]]}}}
    fs2, change, rej2 = apply_change(fs, "prod", 2, after, 200.0)
    assert rej2.count == 0 and fs2.version == 2 and fs2.updated_at == 200.0
    assert set(fs2.flags) == {"r", "t"}
    assert change.deleted == {"s"} and change.upserted == {"r", "t"}
    assert change.evaluators_changed and change.written_at == 200.0 and not change.reset


def test_apply_change_keeps_last_good_flag_on_invalid_json_or_rules():
    fs, _c, _r = build_full("prod", {"a": canonical(ON)}, meta(1), None)
    bad = {**ON, "targeting": {"invalid": [["on", 50.5], ["off", 49.5]]}}
    fs2, change, rej = apply_change(fs, "prod", 2, {"flags": {"a": bad, "n": bad}}, None)
    assert fs2.flags["a"] is fs.flags["a"]  # last good kept
    # a flag without a good version answers the error flagd gives for it
    assert fs2.flags["n"].static_result.error_code is ErrorCode.PARSE_ERROR
    assert rej.count == 2 and change.upserted == {"n"} and fs2.version == 2
    assert set(fs2.rejected) == {"a", "n"}
    # fixing one settles its rejection; the other stays rejected
    fs3, change, rej = apply_change(fs2, "prod", 3, {"flags": {"n": ON}}, None)
    assert set(fs3.rejected) == {"a"} and rej.count == 0 and fs3.flags["n"].problems == ()


def test_invalid_metadata_keeps_previous_metadata():
    fs, _c, _r = build_full("prod", {"a": canonical(ON)}, meta(1, metadata={"team": "x"}), None)
    fs2, change, rej = apply_change(fs, "prod", 2, {"flags": {}, "metadata": {"t": [1]}}, None)
    assert dict(fs2.metadata) == {"team": "x"} and rej.count == 1 and not change.metadata_changed


TARGETED = {**ON, "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}}


def changed(fs, key: str, raw: dict):
    new, _change, _rej = apply_change(fs, "prod", fs.version + 1, {"flags": {key: raw}}, None)
    return new.flags[key], fs.flags[key]


def test_a_recompiled_flag_keeps_the_result_objects_that_did_not_change():
    """The bulk bodies serialise a result once per object: an edit to a rule or a default
    keeps the results it does not change the same objects."""
    fs, _c, _r = build_full("prod", {"t": canonical(TARGETED), "s": canonical(ON)}, meta(1),
                            None)
    new, old = changed(fs, "t", {**TARGETED, "defaultVariant": "off"})
    assert new is not old and new.match_results is old.match_results
    assert new.default_result is not old.default_result
    assert (new.default_result.variant, new.default_result.value) == ("off", False)
    new, old = changed(fs, "t", {**TARGETED, "targeting": {"if": [True, "off", None]}})
    assert new.static_result is not None and new.match_results is old.match_results
    new, old = changed(fs, "s", {**ON, "metadata": {"owner": "a"}})  # not the same results
    assert new.static_result is not old.static_result
    assert new.match_results["on"].metadata == {"owner": "a"}


def test_results_equal_in_python_but_not_in_json_are_not_kept():
    number = {"state": "ENABLED", "variants": {"one": 1, "two": 2}, "defaultVariant": "one"}
    fs, _c, _r = build_full("prod", {"n": canonical(number)}, meta(1), None)
    new, old = changed(fs, "n", {**number, "variants": {"one": 1.0, "two": 2}})
    assert new.static_result is not old.static_result and new.static_result.value == 1.0
    assert new.match_results is not old.match_results


def switched(fs, key: str, raws: list[dict]):
    """``fs`` after writing ``raws`` to ``key`` one version after another."""
    for raw in raws:
        fs, _change, _rej = apply_change(fs, "prod", fs.version + 1, {"flags": {key: raw}}, None)
    return fs


def test_a_flag_switched_back_gets_its_earlier_results_again():
    """A kill switch toggled off and on, a default rolled back: the result objects of two
    versions back come back (the bulk bodies then find their items by object)."""
    fs, _c, _r = build_full("prod", {"s": canonical(ON), "t": canonical(TARGETED)}, meta(1),
                            None)
    first = fs.flags["s"].static_result
    fs = switched(fs, "s", [{**ON, "defaultVariant": "off"}, ON])
    assert fs.flags["s"].static_result is first
    fs = switched(fs, "s", [{**ON, "state": "DISABLED"}])
    disabled = fs.flags["s"].static_result
    fs = switched(fs, "s", [ON, {**ON, "state": "DISABLED"}])
    assert fs.flags["s"].static_result is disabled and disabled.variant is None
    default = fs.flags["t"].default_result
    fs = switched(fs, "t", [{**TARGETED, "defaultVariant": "off"}, TARGETED])
    assert fs.flags["t"].default_result is default and default.variant == "on"


def test_earlier_results_are_not_kept_across_other_variants_or_metadata():
    fs, _c, _r = build_full("prod", {"s": canonical(ON)}, meta(1), None)
    first = fs.flags["s"].static_result
    fs = switched(fs, "s", [{**ON, "variants": {"on": False, "off": True}}, ON])
    assert fs.flags["s"].static_result is not first  # (the version between had other values)
    assert fs.flags["s"].static_result.value is True
    first = fs.flags["s"].static_result
    fs = switched(fs, "s", [{**ON, "metadata": {"owner": "a"}}, ON])
    assert fs.flags["s"].static_result is not first and fs.flags["s"].static_result == first
    assert len(fs.flags["s"].earlier) <= 1
