"""The newest state in one event (proxy.streams.snapshots), per stream kind."""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.evaluation.documents import compile_document
from proxy.model import Change, EvaluationResult, Flag
from proxy.store import Store
from proxy.streams.connection import Connection, Limits, StreamKind
from proxy.streams.frames import StreamStats, notification, rules_put
from proxy.streams.snapshots import Snapshots

DOC = {"flags": {"color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
                           "defaultVariant": "red"}},
       "metadata": {"team": "x"}}


def setup() -> tuple[Store, Snapshots]:
    store = Store()
    fs = compile_document(DOC, version=3, epoch="e1", updated_at=1003.0)
    fs = dataclasses.replace(fs, revision="1700000000003-0")  # as the Redis source sets it
    store.publish("prod", fs, Change(env="prod", version=3, reset=True))
    return store, Snapshots(store)


def connection(snapshots: Snapshots, kind: StreamKind, env: str = "prod") -> Connection:
    return Connection(env, kind, "k", {}, snapshot_for=snapshots.snapshot, limits=Limits(),
                      stats=StreamStats())


def test_a_snapshot_per_kind_and_the_connection_then_holds_the_current_version():
    store, snapshots = setup()
    fs = store.get("prod")
    assert fs is not None
    events = connection(snapshots, StreamKind.EVENTS)
    assert snapshots.snapshot(events) == notification(fs.state_id, 1003.0) and events.version == 3
    rules = connection(snapshots, StreamKind.RULES)
    assert snapshots.snapshot(rules) == rules_put(fs) and rules.version == 3
    evaluated = connection(snapshots, StreamKind.EVALUATED)
    assert snapshots.snapshot(evaluated) == (
        b"event: put\nid: " + fs.state_id.encode()
        + b'\ndata: {"flags":[{"key":"color","reason":"STATIC","variant":"red",'
        b'"value":"red","metadata":{"team":"x"}}],"metadata":{"team":"x"}}\n\n')
    assert evaluated.version == 3 and set(evaluated.results) == {"color"}


def test_no_rules_no_snapshot():
    _store, snapshots = setup()
    conn = connection(snapshots, StreamKind.RULES, env="elsewhere")
    assert snapshots.snapshot(conn) == b"" and conn.version == 0


def test_one_rules_put_encoding_per_flag_set():
    store, snapshots = setup()
    fs = store.get("prod")
    assert fs is not None
    assert snapshots.rules_put(fs) is snapshots.rules_put(fs)  # shared by every stream


def test_items_come_from_the_given_render():
    def render(result: EvaluationResult, flag: Flag | None) -> dict[str, Any]:
        return {"key": result.key, "has_flag": flag is not None}

    store = Store()
    store.publish("prod", compile_document(DOC, version=1, epoch="e1"),
                  Change(env="prod", version=1, reset=True))
    fs = store.get("prod")
    assert fs is not None
    assert Snapshots(store, render).evaluate_context(fs, {}) == \
        {"color": b'{"key":"color","has_flag":true}'}
