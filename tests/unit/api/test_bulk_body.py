"""Bulk bodies: each precomputed result is serialised once, across versions of the rules,
and the bodies stay exactly what a fresh build would give."""

from typing import Any

import orjson
import pytest

from proxy.api import bulk_body
from proxy.api.bulk_body import BulkBodies
from proxy.api.metrics import HotMetrics
from proxy.api.ofrep import OfrepApi
from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate_all
from proxy.evaluation.plan import derive_plan, plan_of
from proxy.model import FlagSet
from proxy.sources.assemble import apply_change
from tests.unit.ofrep_app import ENV, App, publish


def flag(on: bool) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"on": True, "off": False},
            "defaultVariant": "on" if on else "off",
            "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}}


DOC = {"flags": {f"f{i}": flag(True) for i in range(10)}, "metadata": {"flagSetId": "s"}}
PRO, FREE = {"targetingKey": "u1", "plan": "pro"}, {"targetingKey": "u2", "plan": "free"}


def toggle(fs: FlagSet, key: str, on: bool) -> FlagSet:
    """A one-flag change, applied the way the Redis source applies a change entry."""
    new, _change, _rej = apply_change(fs, "e", fs.version + 1, {"flags": {key: flag(on)}}, None)
    return new


@pytest.fixture
def serialised(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the results serialised, in order (a spy on the real ``ofrep_item``)."""
    seen: list[str] = []
    real = bulk_body.ofrep_item

    def spy(result: Any, flag: Any) -> dict[str, Any]:
        seen.append(result.key)
        return real(result, flag)

    monkeypatch.setattr(bulk_body, "ofrep_item", spy)
    return seen


def body(bodies: BulkBodies, fs: FlagSet, context: dict[str, Any]) -> bytes:
    return bodies.body("e", fs, evaluate_all(fs, context)).body_prefix


def fresh(fs: FlagSet, context: dict[str, Any]) -> bytes:
    return body(BulkBodies(HotMetrics()), fs, context)


def test_a_new_version_serialises_only_the_flags_it_changed(serialised: list[str]) -> None:
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(DOC, version=1, epoch="x")
    body(bodies, fs, FREE)
    assert sorted(serialised) == sorted(DOC["flags"])  # first sight: every flag once
    serialised.clear()
    fs2 = toggle(fs, "f3", False)
    assert fs2.flags["f1"] is fs.flags["f1"]  # what the memo relies on
    got = body(bodies, fs2, FREE)
    assert serialised == ["f3"]
    assert b'"key":"f3","metadata":{"flagSetId":"s"},"reason":"DEFAULT","value":false' in got
    serialised.clear()
    assert fresh(fs2, FREE) == got  # ...and the body is what a fresh build gives
    serialised.clear()
    body(bodies, fs2, PRO)  # the other outcome: targeting-match results, new to the memo
    assert sorted(serialised) == sorted(DOC["flags"])


def test_bodies_follow_many_versions_exactly() -> None:
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(DOC, version=1, epoch="x")
    for n in range(60):
        fs = toggle(fs, f"f{n % 10}", n % 20 >= 10)
        for context in (PRO, FREE):
            got = body(bodies, fs, context)
            assert got == fresh(fs, context)
            flags = orjson.loads(got + b"}")["flags"]
            assert [f["key"] for f in flags] == sorted(DOC["flags"])


def test_the_memo_stays_bounded_under_endless_changes(monkeypatch: pytest.MonkeyPatch,
                                                      serialised: list[str]) -> None:
    monkeypatch.setattr(bulk_body, "MIN_ITEMS_BOUND", 16)
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(DOC, version=1, epoch="x")
    body(bodies, fs, FREE)
    serialised.clear()
    bound = max(16, 4 * len(DOC["flags"]))
    for n in range(500):
        # f2..f9 never change; f0 and f1 get a value never seen before each time
        raw = {"state": "ENABLED", "variants": {"v": f"value {n}"}, "defaultVariant": "v"}
        fs, _change, _rej = apply_change(fs, "e", fs.version + 1,
                                         {"flags": {f"f{n % 2}": raw}}, None)
        body(bodies, fs, FREE)
        items = bodies._items["e"]
        for memo in (items.by_id, items.by_wire):
            assert len(memo.young) <= bound and len(memo.old) <= bound
    # Results in use survive the generations (f2..f9's from the start): one serialisation
    # per change, no more.
    assert len(serialised) == 500


def test_a_result_that_comes_back_is_not_serialised_again(serialised: list[str]) -> None:
    """A change recompiles its flag into new result objects; when their content was served
    before (a flag toggled off and on again), its JSON is reused, not made again."""
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(DOC, version=1, epoch="x")
    body(bodies, fs, FREE)
    fs = toggle(fs, "f3", False)
    body(bodies, fs, FREE)
    serialised.clear()
    back = toggle(fs, "f3", True)
    assert back.flags["f3"].default_result is not compile_document(DOC).flags["f3"].default_result
    got = body(bodies, back, FREE)
    assert serialised == []
    assert got == fresh(back, FREE)


@pytest.mark.parametrize("variants", [
    [{"a": 1, "b": 2.5}, {"a": 1, "b": 2}, {"a": 1.0, "b": 2}],  # a float flag's 1 is 1.0
    [{"a": True, "b": False}, {"a": 1, "b": 0}],  # True == 1 in Python, not in JSON
    [{"a": 0.0, "b": 1.0}, {"a": -0.0, "b": 1.0}],  # 0.0 == -0.0
    [{"a": {"x": 1}, "b": {}}, {"a": {"x": 1.0}, "b": {}}, {"a": {"x": True}, "b": {}}],
])
def test_results_equal_in_python_but_not_on_the_wire_are_told_apart(
        variants: list[dict[str, Any]]) -> None:
    bodies = BulkBodies(HotMetrics())
    fs = compile_document({"flags": {"n": {"state": "ENABLED", "variants": variants[0],
                                           "defaultVariant": "a"}}}, version=1, epoch="x")
    for version in (*variants, *variants):
        raw = {"state": "ENABLED", "variants": version, "defaultVariant": "a"}
        fs, _change, _rej = apply_change(fs, "e", fs.version + 1, {"flags": {"n": raw}}, None)
        assert body(bodies, fs, FREE) == fresh(fs, FREE)


def test_a_flag_deleted_and_created_again_counts_its_exposures() -> None:
    """Metrics drop a deleted flag's series; created again, it counts in a new one, even
    when its results are found by content."""
    hot = HotMetrics()
    bodies = BulkBodies(hot)
    fs = compile_document(DOC, version=1, epoch="x")
    hot.count_entry(bodies.body("e", fs, evaluate_all(fs, FREE)))
    without, _change, _rej = apply_change(fs, "e", 2, {"flags": {"f3": None}}, None)
    hot.prune("e", keep=without.flags)
    again = toggle(without, "f3", True)
    hot.count_entry(bodies.body("e", again, evaluate_all(again, FREE)))
    assert hot.exposures[("e", "f3", "on", "DEFAULT")] == 1
    assert hot.exposures[("e", "f2", "on", "DEFAULT")] == 2


def test_error_results_are_built_per_request_and_never_kept() -> None:
    doc = {"flags": {"ok": flag(True),
                     "bad": {**flag(True), "targeting": {"if": [{"var": "plan"}, "nope", None]}}}}
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(doc, version=1, epoch="x")
    results = evaluate_all(fs, PRO)
    entry = bodies.body("e", fs, results)
    assert b'"errorCode"' in entry.body_prefix
    assert not bodies._sets["e"].vectors  # a body with an error is not memoised...
    by_id = bodies._items["e"].by_id
    kept = {id(i[0]) for gen in (by_id.young, by_id.old)
            for i in gen.values()}
    assert {id(r) for r in results if r.error_code is None} == kept  # ...nor its error item


def test_a_removed_environment_is_forgotten() -> None:
    """Through the store, as the bulk endpoint wires it: removal frees the env's memos."""
    app = App(doc=DOC)
    rt = app.runtime
    api = OfrepApi(rt.settings, rt.store, rt.auth, rt.tokens, rt.metrics.hot, rt.cache,
                   lambda: True)
    api.bodies.body(ENV, rt.store.get(ENV), evaluate_all(rt.store.get(ENV), FREE))
    publish(rt.store, DOC, 2)  # a new version keeps the environment's memos
    assert ENV in api.bodies._items
    rt.store.remove(ENV)
    assert ENV not in api.bodies._items and ENV not in api.bodies._sets


@pytest.mark.parametrize("whole_max", [bulk_body.WHOLE_BODY_MAX, 0])
def test_exposures_count_every_flag_of_every_response_served(
        whole_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spliced entries (larger bodies) hold only the dynamic flags' exposure slots; the static
    flags' are their layout's, counted once per fold for all the responses served from its
    entries. Small bodies are kept whole, with every flag's slot."""
    monkeypatch.setattr(bulk_body, "WHOLE_BODY_MAX", whole_max)
    doc = {"flags": {**DOC["flags"], "s1": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                             "defaultVariant": "on"}}}
    hot = HotMetrics()
    bodies = BulkBodies(hot)
    fs = compile_document(doc, version=1, epoch="x")
    served = [bodies.body("e", fs, evaluate_all(fs, ctx)) for ctx in (PRO, FREE, PRO, PRO)]
    assert served[0] is served[2] and served[0].layout is served[1].layout
    assert (served[0].layout.slots == ()) == (whole_max > 0)
    for entry in (*served, served[1]):
        hot.count_entry(entry)
    counts = hot.exposures
    assert counts[("e", "s1", "on", "STATIC")] == 5
    assert counts[("e", "f0", "on", "TARGETING_MATCH")] == 3
    assert counts[("e", "f0", "on", "DEFAULT")] == 2
    hot.count_entry(served[1])
    assert hot.exposures[("e", "s1", "on", "STATIC")] == 6  # folded again: nothing lost


@pytest.mark.parametrize("whole_max", [bulk_body.WHOLE_BODY_MAX, 0])
def test_layouts_patched_across_versions_give_fresh_bodies(
        whole_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions one change apart, each plan derived from the previous one (as the endpoint
    does at publish time), so each layout is the previous one patched: the bodies, digests
    and exposures are what a fresh build gives. Static and targeted flags both change."""
    monkeypatch.setattr(bulk_body, "WHOLE_BODY_MAX", whole_max)
    static = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    doc = {"flags": {**DOC["flags"], **{f"s{i}": static for i in range(6)}},
           "metadata": {"flagSetId": "s"}}
    hot = HotMetrics()
    bodies = BulkBodies(hot)
    fs = compile_document(doc, version=1, epoch="x")
    bodies.body("e", fs, evaluate_all(fs, PRO))  # the first version's plan and layout
    patched = 0
    for n in range(40):
        key = f"s{n % 6}" if n % 2 else f"f{n % 10}"
        raw = {**static, "defaultVariant": "off" if n % 4 < 2 else "on"} if n % 2 else flag(
            n % 4 < 2)
        new, _change, _rej = apply_change(fs, "e", fs.version + 1, {"flags": {key: raw}}, None)
        derive_plan(fs, new)
        for context in (PRO, FREE):
            got = bodies.body("e", new, evaluate_all(new, context))
            fresh = HotMetrics()
            want = BulkBodies(fresh).body("e", new, evaluate_all(new, context))
            assert (got.body_prefix, got.digest) == (want.body_prefix, want.digest)
            assert sorted(hot._slot_keys[s] for s in got.layout.slots + got.exposures) == sorted(
                fresh._slot_keys[s] for s in want.layout.slots + want.exposures)
        patched += bodies._sets["e"].plan_token is plan_of(new).token and bool(
            plan_of(new).lineage)
        fs = new
    assert patched == 40


async def test_the_endpoint_derives_each_new_versions_plan_at_publish() -> None:
    app = App(doc=DOC)
    async with app.client() as client:
        first = await client.post("/ofrep/v1/evaluate/flags", json={"context": PRO})
        assert first.status_code == 200
        fs = app.store.get(ENV)
        changed = {"flags": {**DOC["flags"], "f3": flag(False)}, "metadata": DOC["metadata"]}
        publish(app.store, changed, 2)  # the endpoint's first change: no previous one kept
        assert app.store.get(ENV).plan is None
        await client.post("/ofrep/v1/evaluate/flags", json={"context": PRO})
        fs = app.store.get(ENV)
        new, change, _rej = apply_change(fs, ENV, 3, {"flags": {"f3": flag(True)}}, None)
        app.store.publish(ENV, new, change)
        assert plan_of(new).lineage[0][0] is plan_of(fs).token  # derived when published
        got = await client.post("/ofrep/v1/evaluate/flags", json={"context": FREE})
    want = BulkBodies(HotMetrics()).body(ENV, new, evaluate_all(new, FREE))
    assert got.content.startswith(want.body_prefix + b',"eventStreams":')


def test_a_change_to_targeted_flags_only_keeps_the_bodies_it_did_not_change() -> None:
    """The same static parts give the same body for the same outcome: the previous flag
    set's memo is taken over, its bodies with it, not built again."""
    bodies = BulkBodies(HotMetrics())
    fs = compile_document(DOC, version=1, epoch="x")
    before = bodies.body("e", fs, evaluate_all(fs, PRO))
    new = toggle(fs, "f0", False)  # a pro user still matches its rule: the same outcome
    derive_plan(fs, new)
    after = bodies.body("e", new, evaluate_all(new, PRO))
    assert after is before
    assert after.body_prefix == fresh(new, PRO)
    changed = bodies.body("e", new, evaluate_all(new, FREE))  # the default, now "off"
    assert changed.body_prefix == fresh(new, FREE) != body(bodies, fs, FREE)
