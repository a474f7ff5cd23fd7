"""What a rule reads of the context (``Flag.reads``, ``FlagSet.reads``): the result cache keys
bulk results on those attributes only, so a result must never depend on anything else.
Checked by construction on small rules, and on the conformance generator's documents (every
operator, nested paths, ``$ref``s, iterators, fractional with and without a bucketing
expression): dropping the attributes no rule reads, or adding some, changes no result."""

from __future__ import annotations

from typing import Any

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate_all
from tests.conformance.generator import generate


def reads(targeting: Any, evaluators: dict | None = None) -> frozenset[str] | None:
    doc = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                           "defaultVariant": "off", "targeting": targeting}}}
    if evaluators:
        doc["$evaluators"] = evaluators
    return compile_document(doc).flags["f"].reads


def test_the_top_level_attribute_of_every_var_path_is_read():
    assert reads({"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}) == {"plan"}
    assert reads({"if": [{"==": [{"var": "user.tier"}, 1]}, "on", None]}) == {"user"}
    assert reads({"if": [{"in": [{"var": ["country", "XX"]}, ["DE"]]}, "on", None]}) == {
        "country"}
    assert reads({"if": [{"missing": ["a", "b"]}, "off", "on"]}) == {"a", "b"}


def test_refs_are_read_through_and_fractional_reads_the_targeting_key():
    assert reads({"if": [{"$ref": "beta"}, "on", "off"]},
                 {"beta": {"starts_with": [{"var": "email"}, "beta"]}}) == {"email"}
    assert reads({"fractional": [["on", 50], ["off", 50]]}) == {"targetingKey"}
    assert reads({"fractional": [{"var": "email"}, ["on", 50], ["off", 50]]}) >= {"email"}


def test_inside_an_iterator_only_the_iterated_attribute_is_read():
    rule = {"if": [{"some": [{"var": "roles"}, {"==": [{"var": "name"}, "admin"]}]}, "on", None]}
    assert reads(rule) == {"roles"}


def test_a_read_only_known_at_run_time_or_the_clock_is_unknown():
    assert reads({"if": [{"var": {"cat": ["a", "b"]}}, "on", None]}) is None
    assert reads({"if": [{"var": ""}, "on", None]}) is None
    assert reads({"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "on", None]}) is None
    assert reads({"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, "on", None]}) == frozenset()


def test_a_flag_set_reads_the_union_and_always_the_targeting_key():
    doc = {"flags": {
        "a": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "b": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on",
              "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}}}}
    assert compile_document(doc).reads == {"plan", "targetingKey"}
    doc["flags"]["c"] = {"state": "ENABLED", "variants": {"on": True, "off": False},
                         "defaultVariant": "on", "targeting": {"if": [{"var": ""}, "on", None]}}
    assert compile_document(doc).reads is None


def _outcomes(flag_set: Any, context: dict) -> list[tuple]:
    return [(r.key, r.variant, repr(r.value), r.reason, r.error_code)
            for r in evaluate_all(flag_set, context)]


def test_no_result_depends_on_an_attribute_no_rule_reads():
    checked = 0
    for doc in generate(seed=2112, n_docs=400).docs:
        flag_set = compile_document(doc.doc, tolerant=True)
        if flag_set.reads is None:
            continue
        for context in {id(c.context): c.context for c in doc.cases}.values():
            read_only = {k: v for k, v in context.items() if k in flag_set.reads}
            padded = {**context, "requestId": "r-1", "unreadNested": {"plan": "pro", "n": [1]}}
            expected = _outcomes(flag_set, context)
            assert _outcomes(flag_set, read_only) == expected, (doc.doc, context)
            if not set(padded) - set(context) & flag_set.reads:
                assert _outcomes(flag_set, padded) == expected, (doc.doc, context)
            checked += 1
    assert checked > 1000  # most generated documents have known reads


def test_bulk_evaluation_answers_what_each_flag_answers_alone_every_time():
    """``evaluate_all`` may serve results from memos keyed on what rules read (issue 27's
    bulk plans); whatever it does, each result is the flag's own ``evaluate`` on the same
    context, on first sight and on every repeat (memo hits), contexts differing in one read
    value or one value's type (1, 1.0, True) included."""
    from proxy.evaluation.engine import evaluate

    checked = 0
    for doc in generate(seed=4242, n_docs=300).docs:
        flag_set = compile_document(doc.doc, tolerant=True)
        contexts = [c.context for c in doc.cases]
        variants = []
        for context in contexts:
            for name, value in list(context.items())[:2]:
                for other in (1, 1.0, True, None, "1"):
                    if other != value or type(other) is not type(value):
                        variants.append({**context, name: other})
        for context in [*contexts, *variants, *contexts, *variants]:
            alone = [evaluate(flag_set, key, context) for key in flag_set.flags]
            together = evaluate_all(flag_set, context)
            assert [(r.key, r.variant, repr(r.value), r.reason, r.error_code)
                    for r in together] == [(r.key, r.variant, repr(r.value), r.reason,
                                            r.error_code) for r in alone], (doc.doc, context)
            checked += 1
    assert checked > 10_000
