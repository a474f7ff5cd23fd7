"""The sync document's shape (DESIGN §9): $refs inlined, $evaluators dropped, flags cut to
their five fields, set metadata with scope, invalid flags left out, canonical text."""

from __future__ import annotations

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.sync.document import UnresolvableRef, inline_refs, render, sync_document

DOC = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "b": {"state": "ENABLED", "variants": {"on": True, "off": False},
              "defaultVariant": "off", "description": "not a flagd field providers accept",
              "targeting": {"if": [{"and": [{"$ref": "beta"}, {"$ref": "eu"}]}, "on"]},
              "metadata": {"owner": "web"}},
        "a": {"state": "DISABLED", "variants": {"x": "X"}, "defaultVariant": "x"},
    },
    "$evaluators": {"beta": {"==": [{"var": "tier"}, "beta"]},
                    "eu": {"$ref": "countries"},  # a $ref inside an evaluator: recursive
                    "countries": {"in": [{"var": "country"}, ["de", "fr"]]}},
    "metadata": {"team": "checkout"},
}


def test_refs_inlined_fields_stripped_and_scope_set() -> None:
    doc = sync_document(compile_document(DOC), "prod")
    assert "$evaluators" not in doc and set(doc) == {"flags", "metadata"}
    assert doc["metadata"] == {"team": "checkout", "scope": "prod"}
    assert doc["flags"]["b"] == {
        "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
        "targeting": {"if": [{"and": [{"==": [{"var": "tier"}, "beta"]},
                                      {"in": [{"var": "country"}, ["de", "fr"]]}]}, "on"]},
        "metadata": {"owner": "web"}}
    assert doc["flags"]["a"] == {"state": "DISABLED", "variants": {"x": "X"},
                                 "defaultVariant": "x"}


def test_a_scope_the_document_sets_is_kept() -> None:
    flag_set = compile_document({**DOC, "metadata": {"scope": "mine"}})
    assert sync_document(flag_set, "prod")["metadata"] == {"scope": "mine"}


def test_a_flag_served_as_its_error_is_left_out() -> None:
    bad = {"flags": {"ok": DOC["flags"]["a"],
                     "broken": {"state": "ENABLED", "variants": {"x": 1},
                                "defaultVariant": "x", "targeting": {"$ref": "missing"}},
                     "wrong-default": {"state": "ENABLED", "variants": {"x": 1},
                                       "defaultVariant": "nope"}}}
    flag_set = compile_document(bad, tolerant=True)
    assert set(flag_set.flags) == {"ok", "broken", "wrong-default"}  # flagedge serves errors
    assert set(sync_document(flag_set, "e")["flags"]) == {"ok"}


def test_render_is_canonical_so_equal_rules_give_equal_text() -> None:
    one = compile_document(DOC, version=1)
    reordered = orjson.loads(orjson.dumps(DOC, option=orjson.OPT_SORT_KEYS))
    two = compile_document({**reordered, "$evaluators": {**DOC["$evaluators"],
                                                          "unused": {"==": [1, 1]}}},
                           version=2)
    assert render(one, "prod") == render(two, "prod")
    assert render(one, "prod") != render(one, "dev")
    text = render(one, "prod")
    assert text == orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()


def test_inline_refs_refuses_unknown_names_and_cycles() -> None:
    with pytest.raises(UnresolvableRef):
        inline_refs({"$ref": "nope"}, {})
    with pytest.raises(UnresolvableRef):
        inline_refs({"$ref": "a"}, {"a": {"!": {"$ref": "b"}}, "b": {"$ref": "a"}})
    # an object with more keys than $ref is data, not a reference
    assert inline_refs({"$ref": "a", "x": 1}, {}) == {"$ref": "a", "x": 1}


def test_the_memo_reshapes_only_changed_flags_and_forgets_deleted_ones() -> None:
    from proxy.evaluation.documents import apply_after

    memo: dict = {}
    one = compile_document(DOC)
    text = render(one, "prod", memo)
    assert len(memo) == 2
    changed = {**DOC["flags"]["a"], "defaultVariant": "x", "state": "ENABLED"}
    two = apply_after(one, {"a": changed, "b": None}, DOC["$evaluators"], DOC["metadata"],
                      version=2, epoch="", updated_at=0).flag_set
    assert render(two, "prod", memo) == render(two, "prod")  # memo or not, the same text
    assert set(memo) == {id(two.flags["a"])} and text != render(two, "prod")
