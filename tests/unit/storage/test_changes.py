"""storage/changes.py: the one reader of change-log entries, and undo with ``before``."""

from proxy.storage import changes

FIELDS = {b"version": b"7", b"epoch": b"ep", b"op": b"upsert", b"author": b"ana",
          b"message": b"launch", b"at": b"1700000000.25",
          b"before": b'{"flags":{"a":{"x":1},"b":null}}',
          b"after": b'{"flags":{"a":null,"b":{"y":2}},"$evaluators":{"e":1}}'}


def test_an_entry_parses_from_bytes_or_str():
    for fields in (FIELDS, {k.decode(): v.decode() for k, v in FIELDS.items()}):
        record = changes.parse(b"1700000000250-0", fields)
        assert (record.id, record.version, record.epoch, record.op) == (
            "1700000000250-0", 7, "ep", "upsert")
        assert (record.author, record.message, record.at) == ("ana", "launch", 1700000000.25)
        assert record.before == {"flags": {"a": {"x": 1}, "b": None}}
        assert record.after == {"flags": {"a": None, "b": {"y": 2}}, "$evaluators": {"e": 1}}
        assert record.flags == ["a", "b"] and record.readable


def test_what_does_not_parse_is_marked_not_raised():
    record = changes.parse("1-0", {"version": "seven", "before": "{", "after": "[1]",
                                   "at": "soon"})
    assert record.version == -1 and record.at == 0.0
    assert record.before is None and record.after is None and not record.readable
    assert changes.parse("1-0", {}).version == -1


def test_undo_gives_touched_flags_their_old_values_back():
    doc = {"flags": {"b": {"y": 2}, "c": {"z": 3}}, "$evaluators": {"e": 1}, "metadata": {}}
    before = {"flags": {"a": {"x": 1}, "b": None}, "$evaluators": {"old": 0}}
    old = changes.undo(doc, before)
    assert old == {"flags": {"a": {"x": 1}, "c": {"z": 3}}, "$evaluators": {"old": 0},
                   "metadata": {}}
    assert doc["flags"] == {"b": {"y": 2}, "c": {"z": 3}}  # the input is left alone


def test_undo_keeps_maps_the_write_did_not_change():
    doc = {"flags": {}, "$evaluators": {"e": 1}, "metadata": {"team": "web"}}
    assert changes.undo(doc, {"flags": {}}) == doc
    assert changes.undo(doc, {"metadata": None})["metadata"] == {}
