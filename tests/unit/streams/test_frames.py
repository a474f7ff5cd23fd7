"""SSE wire frames (proxy.streams.frames), byte for byte: every client of every stream parses
exactly these bytes, so a changed separator or field order is a protocol change."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.evaluation.documents import compile_document
from proxy.model import state_id
from proxy.streams.frames import (
    PING,
    Propagation,
    StreamStats,
    count,
    diff_frames,
    frame,
    id_only,
    notification,
    rules_entry,
    rules_put,
)
from proxy.streams.history import Entry

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
ON_JSON = b'{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}'


def sid(version: int) -> str:
    """The state id of ``version`` in these tests (epoch e1, a Redis-like revision)."""
    return state_id(version, "e1", f"{1_700_000_000_000 + version}-0")


def line(version: int) -> bytes:
    """The ``id:`` line that carries it."""
    return b"id: " + sid(version).encode() + b"\n"


def test_a_frame_is_its_fields_one_per_line_then_a_blank_line():
    assert frame("put", "3-0a1b2c3d", b"{}") == b"event: put\nid: 3-0a1b2c3d\ndata: {}\n\n"
    assert frame(None, None, b"x") == b"data: x\n\n"


def test_id_only_moves_last_event_id_without_an_event():
    assert id_only(sid(7)) == line(7) + b"\n"


def test_heartbeat_is_an_sse_comment():
    assert PING == b": ping\n\n"


def test_notification_is_ofreps_refetch_event_with_whole_seconds():
    """The etag is the state id: it comes back as the re-fetch's ``flagConfigEtag``."""
    assert notification(sid(3), 1_700_000_000.9) == (
        b"event: message\n" + line(3)
        + b'data: {"type":"refetchEvaluation","etag":"' + sid(3).encode()
        + b'","lastModified":1700000000}\n\n')


def test_rules_put_carries_the_version_epoch_time_hashing_and_whole_document():
    """The hashing generation rides beside the flagd document, never inside it."""
    fs = compile_document({"flags": {"b": ON, "a": ON}, "metadata": {"team": "x"}},
                          version=2, epoch="e1", updated_at=1_700_000_002.5)
    fs = dataclasses.replace(fs, revision="1700000000002-0")
    assert fs.state_id == sid(2)
    assert rules_put(fs) == (
        b"event: put\n" + line(2)
        + b'data: {"version":2,"epoch":"e1","updated_at":1700000002.5,"fractional_hash":"v2",'
        b'"document":{"flags":{"a":' + ON_JSON + b',"b":' + ON_JSON + b'},'
        b'"metadata":{"team":"x"}}}\n\n')


def test_rules_entry_upsert_is_one_patch_with_the_version():
    entry = Entry(version=4, at=10.0, upserted={"a": ON}, state_id=sid(4))
    assert rules_entry(entry) == (
        b"event: patch\n" + line(4) + b'data: {"version":4,"updated_at":10.0,"flags":{"a":'
        + ON_JSON + b"}}\n\n")


def test_rules_entry_delete_alone_carries_the_version():
    entry = Entry(version=5, at=11.0, deleted=("a", "b"), state_id=sid(5))
    assert rules_entry(entry) == (
        b"event: delete\n" + line(5) + b'data: {"version":5,"flags":["a","b"]}\n\n')


def test_rules_entry_delete_and_patch_only_the_patch_carries_the_version():
    """A client cut off between the two has not moved its Last-Event-ID: it replays both."""
    entry = Entry(version=6, at=12.0, upserted={"c": ON}, deleted=("a",),
                  evaluators={"is-pro": {"==": [1, 1]}}, metadata={"team": "y"},
                  state_id=sid(6))
    assert rules_entry(entry) == (
        b'event: delete\ndata: {"version":6,"flags":["a"]}\n\n'
        b"event: patch\n" + line(6) + b'data: {"version":6,"updated_at":12.0,"flags":{"c":' + ON_JSON
        + b'},"$evaluators":{"is-pro":{"==":[1,1]}},"metadata":{"team":"y"}}\n\n')


def test_rules_entry_that_touches_nothing_still_moves_the_version():
    assert rules_entry(Entry(version=7, at=1.0, state_id=sid(7))) == (
        b"event: patch\n" + line(7) + b'data: {"version":7,"updated_at":1.0,"flags":{}}\n\n')


def test_diff_frames_patch_what_differs_delete_what_is_gone_and_update_what_is_held():
    held = {"a": hash(b'{"key":"a"}'), "b": hash(b'{"key":"b","value":1}'), "gone": 1}
    new = {"a": b'{"key":"a"}', "b": b'{"key":"b","value":2}', "c": b'{"key":"c"}'}
    out = diff_frames(held, new, ["gone", "c", "b", "a"], sid(9))
    assert out == (b'event: delete\ndata: {"flags":["gone"]}\n\n'
                   b"event: patch\n" + line(9)
                   + b'data: {"flags":[{"key":"b","value":2},{"key":"c"}]}\n\n')
    assert held == {k: hash(v) for k, v in new.items()}
    assert diff_frames(held, new, ["a", "b", "c"], sid(10)) == b""  # nothing differs now


def test_diff_frames_delete_alone_carries_the_version():
    held = {"a": 1}
    assert diff_frames(held, {}, ["a"], sid(3)) == (
        b"event: delete\n" + line(3) + b'data: {"flags":["a"]}\n\n')
    assert held == {}


def test_counters_and_propagation_buckets():
    stats = StreamStats()
    count(stats, "events", "sent")
    count(stats, "events", "sent", 2)
    assert stats.sse_events == {("events", "sent"): 3}
    p = Propagation()
    p.observe("rules", 0.001)  # on a bound: that bucket (le=0.001)
    p.observe("rules", 0.003)
    p.observe("rules", 99.0)  # past the last bound: +Inf
    counts = p.counts["rules"]
    assert counts[0] == 1 and counts[2] == 1 and counts[-1] == 1 and sum(counts) == 3
    assert p.sums["rules"] == pytest.approx(99.004)
