"""The change entry's release-control fields (DESIGN §10): parsed from a stream entry, absent
on ordinary writes, shown by history."""

from __future__ import annotations

from proxy.release.publisher import history_json, release_marks
from proxy.storage import changes

BASE = {b"version": b"3", b"epoch": b"e", b"op": b"upsert", b"before": b'{"flags":{}}',
        b"after": b'{"flags":{}}', b"author": b"ann", b"message": b"m", b"at": b"1.5"}


def test_an_ordinary_entry_has_no_marks():
    record = changes.parse(b"1-0", BASE)
    assert (record.request, record.approvers, record.kill, record.break_glass) == (
        None, (), False, False)
    assert release_marks(record) == ""


def test_a_request_entry_names_request_and_approvers():
    record = changes.parse(b"1-0", {**BASE, b"request": b"4",
                                    b"approvers": b'["bob","carol"]'})
    assert (record.request, record.approvers) == (4, ("bob", "carol"))
    assert release_marks(record) == "[request 4, approved by bob, carol]"
    doc = history_json(record)
    assert (doc["request"], doc["approvers"], doc["kill"]) == (4, ["bob", "carol"], False)


def test_marks_and_unreadable_fields():
    record = changes.parse(b"1-0", {**BASE, b"kill": b"1", b"break_glass": b"1",
                                    b"approvers": b"not json", b"request": b"x"})
    assert record.kill and record.break_glass
    assert (record.request, record.approvers) == (None, ())
    assert release_marks(record) == "[break-glass] [kill]"
