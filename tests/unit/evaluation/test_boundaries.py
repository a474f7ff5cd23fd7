"""Time boundaries (DESIGN §10): the literal ``$flagd.timestamp`` thresholds the compiler
records, and the interval a time falls in. Unknown uses of the clock give None."""

from __future__ import annotations

import operator
import time
from typing import Any

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from proxy.evaluation.jsonlogic.compiler import flips
from proxy.model import FlagSet, split_stream_id

CLOCK = {"var": "$flagd.timestamp"}


def _doc(targeting: Any, evaluators: dict[str, Any] | None = None,
         state: str = "ENABLED") -> dict[str, Any]:
    doc: dict[str, Any] = {"flags": {"f": {
        "state": state, "variants": {"a": "a", "b": "b"}, "defaultVariant": "b",
        "targeting": targeting}}}
    if evaluators:
        doc["$evaluators"] = evaluators
    return doc


def _boundaries(targeting: Any, evaluators: dict[str, Any] | None = None) -> Any:
    fs = compile_document(_doc(targeting, evaluators))
    assert fs.flags["f"].boundaries == fs.boundaries
    return fs.boundaries


@pytest.mark.parametrize(("cond", "expected"), [
    ({"<": [CLOCK, 100]}, (100,)),
    ({">=": [CLOCK, 100]}, (100,)),
    ({"<=": [CLOCK, 100]}, (101,)),
    ({">": [CLOCK, 100]}, (101,)),
    ({"==": [CLOCK, 100]}, (100, 101)),
    ({"!=": [CLOCK, 100]}, (100, 101)),
    ({"===": [CLOCK, 100]}, (100, 101)),
    ({"!==": [CLOCK, 100]}, (100, 101)),
    # the literal on the left: mirrored
    ({">": [100, CLOCK]}, (100,)),
    ({"<": [100, CLOCK]}, (101,)),
    ({">=": [100, CLOCK]}, (101,)),
    ({"<=": [100, CLOCK]}, (100,)),
    # between forms
    ({"<": [100, CLOCK, 200]}, (101, 200)),
    ({"<=": [100, CLOCK, 200]}, (100, 201)),
    # fractional thresholds: the first whole second on the other side
    ({"<": [CLOCK, 100.5]}, (101,)),
    ({"<=": [CLOCK, 100.5]}, (101,)),
    # the var as a one-element list
    ({"<": [{"var": ["$flagd.timestamp"]}, 100]}, (100,)),
    # a folded constant is a literal
    ({"<": [CLOCK, {"+": [100, 5]}]}, (105,)),
])
def test_threshold_forms(cond: Any, expected: tuple[int, ...]) -> None:
    assert _boundaries({"if": [cond, "a", "b"]}) == expected


def test_if_chain_of_steps_collects_every_threshold() -> None:
    chain = {"if": [{"<": [CLOCK, 300]}, "a", {"<": [CLOCK, 100]}, "b",
                    {">=": [CLOCK, 200]}, "a", "b"]}
    assert _boundaries(chain) == (100, 200, 300)


def test_interpreted_if_and_nesting() -> None:
    # an `if` with two arguments is interpreted by the reference: same thresholds
    assert _boundaries({"if": [{"<": [CLOCK, 50]}, "a"]}) == (50,)
    assert _boundaries({"if": [{"and": [{"<": [CLOCK, 50]}, {"==": [{"var": "x"}, 1]}]},
                               "a", "b"]}) == (50,)


def test_refs_on_either_side() -> None:
    evaluators = {"now": CLOCK, "monday": 1767000000, "later": {"$ref": "now"},
                  "before": {"<": [CLOCK, 1767000000]}}
    assert _boundaries({"if": [{"<": [{"$ref": "later"}, {"$ref": "monday"}]}, "a", "b"]},
                       evaluators) == (1767000000,)
    assert _boundaries({"if": [{"$ref": "before"}, "a", "b"]}, evaluators) == (1767000000,)


@pytest.mark.parametrize("cond", [
    {"<": [CLOCK, {"var": "until"}]},  # a non-literal threshold
    {">": [{"+": [CLOCK, 60]}, 100]},  # arithmetic on the clock
    {"<": [CLOCK, "100"]},  # a string literal (coerced by JavaScript)
    {"<": [CLOCK, None]},
    {"<": [CLOCK, True]},
    {"var": "$flagd.timestamp"},  # the clock as a condition
    {"==": [{"var": ["$flagd.timestamp", 5]}, 100]},  # a var with a default
    {"!!": [{"var": "$flagd"}]},  # all of $flagd
    {"!!": [{"var": ""}]},  # the whole data
    {"!!": [{"var": {"cat": ["$flagd.", "timestamp"]}}]},  # a computed name
    {"in": [CLOCK, [100, 200]]},  # passed to another operator
])
def test_other_uses_are_unknown(cond: Any) -> None:
    assert _boundaries({"if": [cond, "a", "b"]}) is None


def test_one_unknown_use_beside_literal_ones_is_unknown() -> None:
    assert _boundaries({"if": [{"and": [{"<": [CLOCK, 100]}, {"<": [CLOCK, {"var": "x"}]}]},
                               "a", "b"]}) is None


def test_flags_without_the_clock_have_none() -> None:
    assert _boundaries({"if": [{"==": [{"var": "plan"}, "pro"]}, "a", "b"]}) == ()
    assert compile_document({"flags": {}}).boundaries == ()


def test_set_unions_its_flags_and_skips_disabled_ones() -> None:
    doc = _doc({"if": [{"<": [CLOCK, 300]}, "a", "b"]})
    doc["flags"]["g"] = {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
                         "targeting": {"if": [{">=": [CLOCK, 100]}, "a", "b"]}}
    doc["flags"]["off"] = {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a",
                           "targeting": {"if": [{"<": [CLOCK, {"var": "x"}]}, "a", "a"]}}
    fs = compile_document(doc)
    assert fs.boundaries == (100, 300)
    doc["flags"]["off"]["state"] = "ENABLED"
    assert compile_document(doc).boundaries is None


def test_flips_is_never_late() -> None:
    """At every whole second where ``clock OP T`` answers differently than the second
    before, there is a boundary (an early one is allowed)."""
    answers = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
               "==": operator.eq, "!=": operator.ne}
    for op, answer in answers.items():
        for threshold in (100, 100.5, 99.9, -3, -2.5):
            at = flips(op, threshold)
            for t in range(-10, 110):
                if answer(t, threshold) != answer(t - 1, threshold):
                    assert t in at, (op, threshold, t)


def test_interval_and_next_boundary() -> None:
    fs = FlagSet(flags={}, boundaries=(100, 200))
    assert [fs.interval(t) for t in (0, 99.9, 100, 150, 199.99, 200, 10**10)] == \
        [0, 0, 1, 1, 1, 2, 2]
    assert fs.next_boundary(50) == 100
    assert fs.next_boundary(100) == 200
    assert fs.next_boundary(200) is None
    assert FlagSet(flags={}).interval(123) == 0
    assert FlagSet(flags={}, boundaries=None).next_boundary(1) is None


def test_stream_id_gains_the_interval_only_with_boundaries() -> None:
    plain = FlagSet(flags={}, version=3, epoch="e")
    assert plain.stream_id(500) == plain.state_id
    timed = FlagSet(flags={}, version=3, epoch="e", boundaries=(100, 200))
    assert timed.stream_id(150) == f"{timed.state_id}~1"
    assert split_stream_id(timed.stream_id(150)) == (timed.state_id, 1)
    assert split_stream_id(plain.state_id) == (plain.state_id, None)


def test_the_result_flips_at_the_boundary_it_records() -> None:
    now = int(time.time())
    fs = compile_document(_doc({"if": [{"<": [CLOCK, now + 1000]}, "a", "b"]}))
    assert fs.boundaries == (now + 1000,)
    assert evaluate(fs, "f", {}).variant == "a"
    past = compile_document(_doc({"if": [{"<": [CLOCK, now - 1]}, "a", "b"]}))
    assert evaluate(past, "f", {}).variant == "b"
