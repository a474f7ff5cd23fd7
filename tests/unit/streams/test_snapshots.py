"""The newest state in one event (proxy.streams.snapshots), per stream kind."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from proxy.evaluation.documents import compile_document
from proxy.model import Change, EvaluationResult, Flag, Reason
from proxy.store import Store
from proxy.streams import snapshots as snapshots_module
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


def counting_render() -> tuple[list[str], Any]:
    calls: list[str] = []

    def render(result: EvaluationResult, _flag: Flag | None) -> dict[str, Any]:
        calls.append(result.key)
        return result.to_ofrep()

    return calls, render


TARGETED = {"flags": {**DOC["flags"], "beta": {
    "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
    "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}}}}


def test_a_result_shared_by_contexts_is_encoded_once_for_every_stream():
    # A stream opening encodes every flag's item: the static flags' and each targeting
    # outcome's results are shared objects, so they are rendered once, not once per stream.
    calls, render = counting_render()
    store = Store()
    store.publish("prod", compile_document(TARGETED, version=1, epoch="e1"),
                  Change(env="prod", version=1, reset=True))
    fs = store.get("prod")
    assert fs is not None
    snapshots = Snapshots(store, render)
    first = {plan: snapshots.evaluate_context(fs, {"plan": plan}) for plan in ("pro", "free")}
    again = {plan: snapshots.evaluate_context(fs, {"plan": plan, "n": n})
             for n in range(50) for plan in ("pro", "free")}
    assert sorted(calls) == ["beta", "beta", "color"]  # beta's on and off, color's one result
    assert again == first and first["pro"]["beta"] != first["free"]["beta"]
    assert first["pro"]["beta"] == (b'{"key":"beta","reason":"TARGETING_MATCH","variant":"on",'
                                      b'"value":true,"metadata":{}}')


def test_results_built_per_request_pass_through_a_bounded_memo(monkeypatch: Any):
    monkeypatch.setattr(snapshots_module, "RENDERED_BOUND", 10)
    calls, render = counting_render()
    rendered = snapshots_module._Rendered()
    results = [EvaluationResult(f"f{i}", Reason.STATIC, "on", True) for i in range(100)]
    for r in results:
        assert rendered.encoded(r, None, render) == orjson.dumps(r.to_ofrep())
    assert len(calls) == 100 and len(rendered.young) + len(rendered.old) <= 20
    rendered.encoded(results[-1], None, render)  # still held: not rendered again
    assert len(calls) == 100
