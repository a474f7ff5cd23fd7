"""Contract between the server's rules-stream encoder and the provider's decoder, without a
network: random rule histories are encoded with the streams' own frame builders
(``proxy.streams.frames``), parsed by httpx-sse (the parser the provider uses) and applied to a
:class:`RulesState`; after every version the provider's copy must equal the server's rules,
evaluate the same, and announce at least the flags the change touched."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from proxy.model import Change, FlagSet
from proxy.provider.rules import RulesState
from proxy.streams.frames import id_only, rules_entry, rules_put
from proxy.streams.history import entry_from_change

KEYS = ["a", "b", "c", "d"]
TARGETING: list[Any] = [
    None,
    {"if": [{"$ref": "e1"}, "on", None]},
    {"if": [{"$ref": "e2"}, "off", "on"]},
    {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", None]},
    {"fractional": [["on", 1], ["off", 1]]},
]
EVALUATOR_BODIES: list[Any] = [
    {"==": [{"var": "tier"}, "gold"]},
    {"in": [{"var": "country"}, ["DE", "FR"]]},
    {"or": [{"$ref": "e1"}, {"==": [{"var": "tier"}, "silver"]}]},  # e2 only: e1 is a leaf
]
CONTEXTS = [{}, {"tier": "gold"}, {"tier": "silver", "country": "DE", "targetingKey": "u1"},
            {"country": "FR", "targetingKey": "u2"}]

flags_st = st.dictionaries(
    st.sampled_from(KEYS),
    st.fixed_dictionaries({
        "state": st.sampled_from(["ENABLED", "DISABLED"]),
        "default": st.sampled_from(["on", "off", None]),
        "targeting": st.sampled_from(range(len(TARGETING))),
        "owner": st.sampled_from([None, "web", "api"]),
    }),
)
doc_st = st.fixed_dictionaries({
    "flags": flags_st,
    "e1": st.sampled_from(range(2)),
    "e2": st.sampled_from(range(3)),
    "extra_evaluator": st.booleans(),
    "metadata": st.sampled_from([{}, {"team": "core"}, {"team": "growth", "tier": 2}]),
})


def build(spec: dict[str, Any]) -> dict[str, Any]:
    flags = {}
    for key, f in spec["flags"].items():
        raw: dict[str, Any] = {"state": f["state"], "variants": {"on": True, "off": False},
                               "defaultVariant": f["default"]}
        if TARGETING[f["targeting"]] is not None:
            raw["targeting"] = TARGETING[f["targeting"]]
        if f["owner"]:
            raw["metadata"] = {"owner": f["owner"]}
        flags[key] = raw
    evaluators = {"e1": EVALUATOR_BODIES[spec["e1"]], "e2": EVALUATOR_BODIES[spec["e2"]]}
    if spec["extra_evaluator"]:
        evaluators["unused"] = {"!": [{"var": "x"}]}
    doc: dict[str, Any] = {"flags": flags, "$evaluators": evaluators}
    if spec["metadata"]:
        doc["metadata"] = spec["metadata"]
    return doc


def server_change(old: FlagSet, new: FlagSet) -> Change:
    """What the Redis source would publish for old -> new (flags compared as written)."""
    upserted = {k for k in new.flags if k not in old.flags or old.flags[k].raw != new.flags[k].raw}
    return Change(env="t", version=new.version, upserted=frozenset(upserted),
                  deleted=frozenset(old.flags.keys() - new.flags.keys()),
                  evaluators_changed=dict(old.evaluators) != dict(new.evaluators),
                  metadata_changed=dict(old.metadata) != dict(new.metadata),
                  written_at=time.time())


def sse_events(stream: bytes) -> list[tuple[str, str, str]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=stream)
    return [(e.event, e.data, e.id) for e in EventSource(response).iter_sse()]


def same_rules(mine: FlagSet | None, server: FlagSet) -> None:
    assert mine is not None
    assert mine.version == server.version
    assert mine.to_document() == server.to_document()
    for key in server.flags:
        assert mine.flags[key].metadata == server.flags[key].metadata, key
        for ctx in CONTEXTS:
            a, b = evaluate(mine, key, ctx), evaluate(server, key, ctx)
            assert (a.value, a.variant, a.reason, a.error_code) == (
                b.value, b.variant, b.reason, b.error_code), (key, ctx)


@settings(max_examples=60, deadline=None)
@given(st.lists(doc_st, min_size=2, max_size=8))
def test_random_histories_decode_to_the_servers_rules(specs: list[dict[str, Any]]) -> None:
    versions = [compile_document(build(spec), version=i + 1, epoch="e", updated_at=1.0)
                for i, spec in enumerate(specs)]
    stream = b"retry: 3000\n" + rules_put(versions[0])
    expected_changes: dict[int, set[str]] = {}
    for old, new in itertools.pairwise(versions):
        change = server_change(old, new)
        if not (change.upserted or change.deleted or change.evaluators_changed
                or change.metadata_changed):
            stream += id_only(new.state_id)  # nothing to send but the version moves
            continue
        stream += rules_entry(entry_from_change(change, new))
        expected_changes[new.version] = set(change.upserted | change.deleted)
    by_version = {fs.version: fs for fs in versions}

    state = RulesState()
    announced: dict[int, set[str]] = {}
    for event, data, event_id in sse_events(stream):
        applied = state.apply(event, data, event_id or None)
        if applied is not None:
            announced[applied.version] = set(applied.flags_changed)
            same_rules(state.flag_set, by_version[applied.version])
    assert state.last_event_id == versions[-1].state_id
    assert announced.get(1) == set(versions[0].flags)  # the first put: everything
    for version, touched in expected_changes.items():
        assert version in announced, version
        assert touched <= announced[version], (version, touched, announced[version])
        old, new = by_version[version - 1], by_version[version]
        assert announced[version] <= old.flags.keys() | new.flags.keys()
        # a flag announced as unchanged really evaluates the same everywhere
        for key in (old.flags.keys() & new.flags.keys()) - announced[version]:
            for ctx in CONTEXTS:
                a, b = evaluate(old, key, ctx), evaluate(new, key, ctx)
                assert (a.value, a.variant, a.reason) == (b.value, b.variant, b.reason)


def test_put_after_patches_resets_to_the_servers_rules() -> None:
    """A fresh ``put`` (resume too old, coalesced slow reader) replaces whatever was held."""
    first = compile_document(build({"flags": {"a": {"state": "ENABLED", "default": "on",
                                                     "targeting": 1, "owner": None}},
                                    "e1": 0, "e2": 0, "extra_evaluator": False,
                                    "metadata": {}}), version=3)
    later = compile_document({"flags": {"z": {"state": "ENABLED", "variants": {"x": "x"},
                                              "defaultVariant": "x"}}}, version=9)
    state = RulesState()
    for event in sse_events(rules_put(first) + rules_put(later)):
        state.apply(*event)
    same_rules(state.flag_set, later)
    assert orjson.loads(orjson.dumps(state.flag_set.to_document() if state.flag_set else None)
                        ) == later.to_document()
