"""Progressive rollout rules (release/rollout_rules.py): their shape, their behaviour through
the real evaluator at each step's time (hypothesis), and the validation errors."""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.evaluation import engine
from proxy.evaluation.documents import compile_document, validate_document
from proxy.model import FractionalHash
from proxy.release import rollout_rules as rr

FLAG: dict[str, Any] = {"state": "ENABLED", "variants": {"on": True, "off": False},
                        "defaultVariant": "off"}
START, EVERY = 1_800_000_000, 3600
USERS = [f"user-{i}" for i in range(2000)]
# Previous targetings: none, one matching a segment, a fractional of its own (same bucketing
# key as the rollout's), and one serving the rollout variant to a segment.
PREVIOUS = [
    None,
    {"if": [{"ends_with": [{"var": "targetingKey"}, "7"]}, "on", "off"]},
    {"fractional": [["on", 10], ["off", 90]]},
    {"if": [{"in": [{"var": "targetingKey"}, ["user-1", "user-2", "user-3"]]}, "off"]},
]


def _rollout(steps: tuple[int, ...], previous: Any = None) -> rr.Rollout:
    flag = {**FLAG, "targeting": previous} if previous is not None else FLAG
    return rr.plan("f", flag, variant="on", steps=steps, every=EVERY, start=START)


def _variants_at(flag: dict[str, Any], when: float, users: list[str],
                 generation: FractionalHash = FractionalHash.V2) -> dict[str, str | None]:
    """Each user's variant, by the real evaluator with its clock at ``when``."""
    flags = compile_document({"flags": {"f": flag}}, fractional_hash=generation)
    clock = mock.Mock(time=lambda: when)
    with mock.patch.object(engine, "time", clock):
        return {u: engine.evaluate(flags, "f", {"targetingKey": u}).variant for u in users}


def test_the_rule_is_an_if_chain_on_the_timestamp_with_literal_thresholds() -> None:
    rollout = _rollout((5, 50, 100), PREVIOUS[1])
    rule = rr.ramp_rule(rollout)
    ts = {"var": "$flagd.timestamp"}
    assert rule["if"][0] == {"<": [ts, START]} and rule["if"][1] == PREVIOUS[1]
    assert rule["if"][2] == {"<": [ts, START + EVERY]}
    assert rule["if"][4] == {"<": [ts, START + 2 * EVERY]}
    assert len(rule["if"]) == 7
    for step, percent in zip([*rule["if"][3::2], rule["if"][6]], (5, 50, 100), strict=True):
        assert step == {"if": [{"==": [{"fractional": [["in", percent], ["out", 100 - percent]]},
                                       "in"]}, "on", PREVIOUS[1]]}
    assert all(isinstance(t, int) for t in (rule["if"][0]["<"][1], rule["if"][2]["<"][1]))


@pytest.mark.parametrize("generation", list(FractionalHash))
def test_the_rule_validates_as_a_flagd_flag(generation: FractionalHash) -> None:
    flag = rr.started(FLAG, _rollout((5, 25, 50, 100), PREVIOUS[2]))
    doc = {"flags": {"f": flag}}
    assert validate_document(doc) == []
    assert compile_document(doc, fractional_hash=generation).flags["f"].uses_timestamp


def test_a_rollout_over_an_experiments_split_serves_what_it_serves_over_a_plain_one() -> None:
    # An experiment flag's split picks are marked as assignments; under the ramp's clock
    # chain the flag is no experiment, and every user got an error ("[object Object]").
    split = {"if": [{"$ref": "staff"}, "on", {"fractional": [["on", 30], ["off", 70]]}]}
    flag = {**FLAG, "targeting": split}
    rollout = rr.plan("f", flag, variant="on", steps=(10, 50, 100), every=EVERY, start=START)
    for meta in ({}, {"metadata": {"kind": "experiment", "experimentId": "e-1"}}):
        doc = {"$evaluators": {"staff": {"ends_with": [{"var": "targetingKey"}, "-7"]}},
               "flags": {"f": {**rr.started(flag, rollout), **meta}}}
        flags = compile_document(doc)
        clock = mock.Mock(time=lambda: START + EVERY + 1)  # the second step, 50 %
        with mock.patch.object(engine, "time", clock):
            served = {u: engine.evaluate(flags, "f", {"targetingKey": u}) for u in USERS}
        assert all(r.error_code is None for r in served.values()), meta
        shares = sum(r.variant == "on" for r in served.values()) / len(USERS)
        # 50 %: the previous split's "on" users are among them (the same bucketing key)
        assert 0.45 < shares < 0.56, meta
        if not meta:
            plain = {u: r.variant for u, r in served.items()}
        else:
            assert {u: r.variant for u, r in served.items()} == plain


def test_start_is_rounded_up_to_whole_seconds() -> None:
    rollout = rr.plan("f", FLAG, variant="on", steps=(50,), every=60, start=START + 0.2)
    assert rollout.start == START + 1


def test_before_start_the_previous_targeting_or_the_default_is_served() -> None:
    flag = rr.started({**FLAG, "targeting": PREVIOUS[1]}, _rollout((50, 100), PREVIOUS[1]))
    got = _variants_at(flag, START - 1, USERS[:200])
    assert all(v == ("on" if u.endswith("7") else "off") for u, v in got.items())
    assert set(_variants_at(rr.started(FLAG, _rollout((50, 100))), START - 1,
                            USERS[:50]).values()) == {"off"}


def _expected_share(percent: int, previous: Any, before: dict[str, str | None]) -> float:
    """The share of users in the variant at a step of ``percent``: the bucketed ones plus
    those PREVIOUS gives it among the rest. PREVIOUS[2] buckets by the same key as the
    rollout, so its 10 % "on" are the rollout's lowest buckets: max(percent, 10)."""
    if previous == PREVIOUS[2]:
        return max(percent, 10) / 100
    before_on = sum(1 for v in before.values() if v == "on") / len(before)
    return percent / 100 + (1 - percent / 100) * before_on


steps_lists = st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(
    lambda s: tuple(sorted(s)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_lists, previous=st.sampled_from(PREVIOUS),
       generation=st.sampled_from(list(FractionalHash)))
def test_each_step_serves_its_share_and_nobody_leaves_the_variant(
        steps: tuple[int, ...], previous: Any, generation: FractionalHash) -> None:
    rollout = _rollout(steps, previous)
    flag = rr.started({**FLAG, "targeting": previous} if previous else FLAG, rollout)
    before = _variants_at({**FLAG, "targeting": previous} if previous else FLAG, 0, USERS,
                          generation)
    seen_on: set[str] = {u for u, v in before.items() if v == "on"}
    for i, percent in enumerate(steps):
        # the first and the last second of the step: the thresholds are where they should be
        for when in (rollout.boundary(i), rollout.boundary(i + 1) - 1):
            got = _variants_at(flag, when, USERS, generation)
            on = {u for u, v in got.items() if v == "on"}
            assert seen_on <= on, f"users left the variant at step {i} ({percent}%)"
            seen_on = on
            share = _expected_share(percent, previous, before)
            sigma = math.sqrt(len(USERS) * share * (1 - share))
            assert abs(len(on) - len(USERS) * share) <= 5 * sigma + 1, (percent, len(on))
            assert all(v in ("on", before[u]) for u, v in got.items())


def test_the_last_step_holds_after_its_boundary_and_cleanup_serves_the_same() -> None:
    rollout = _rollout((20, 60), PREVIOUS[1])
    flag = rr.started({**FLAG, "targeting": PREVIOUS[1]}, rollout)
    late = _variants_at(flag, rollout.end + 10 * EVERY, USERS)
    assert late == _variants_at(rr.finished(flag, rollout), rollout.end, USERS)
    assert "$flagd" not in str(rr.finished(flag, rollout))


def test_cleanup_at_100_percent_makes_the_variant_the_default_and_drops_targeting() -> None:
    rollout = _rollout((50, 100), PREVIOUS[3])
    flag = rr.started({**FLAG, "targeting": PREVIOUS[3]}, rollout)
    done = rr.finished(flag, rollout)
    assert done["defaultVariant"] == "on" and "targeting" not in done
    assert set(_variants_at(flag, rollout.end, USERS).values()) == {"on"}


def test_pause_freezes_the_current_step_and_abort_restores_the_previous_rule() -> None:
    rollout = _rollout((10, 40, 70), PREVIOUS[2])
    flag = rr.started({**FLAG, "targeting": PREVIOUS[2]}, rollout)
    at = rollout.boundary(1) + 5
    paused = rr.frozen(flag, rollout, rollout.percent_at(at))
    assert _variants_at(paused, at + 100 * EVERY, USERS) == _variants_at(flag, at, USERS)
    assert rr.aborted(flag, rollout) == {**FLAG, "targeting": PREVIOUS[2]}
    assert rr.aborted(rr.started(FLAG, _rollout((10,))), _rollout((10,))) == FLAG
    assert rr.frozen(flag, rollout, None) == {**FLAG, "targeting": PREVIOUS[2]}


def test_step_at() -> None:
    rollout = _rollout((5, 25, 50))
    assert [rollout.step_at(t) for t in (START - 1, START, START + EVERY - 1, START + EVERY,
                                         START + 2 * EVERY, START + 99 * EVERY)] == \
        [-1, 0, 0, 1, 2, 2]
    assert rollout.percent_at(START - 1) is None and rollout.percent_at(START) == 5


def test_the_record_round_trips_and_its_head_takes_a_version() -> None:
    rollout = _rollout((5, 100), PREVIOUS[2])
    assert rr.Rollout.from_json(rollout.head() + b',"version":7}') == rollout.replace(version=7)
    with pytest.raises(ValueError, match="not a rollout record"):
        rr.Rollout.from_json(b'{"steps": [5]}')


@pytest.mark.parametrize(("text", "message"), [
    ("5,25,abc", "whole percentages"), ("", "whole percentages"),
    ("0,50", "from 1 to 100"), ("50,101", "from 1 to 100"),
    ("25,5", "strictly increasing"), ("5,5", "strictly increasing"),
])
def test_bad_steps_are_refused(text: str, message: str) -> None:
    with pytest.raises(rr.RolloutError, match=message):
        rr.parse_steps(text)


def test_parse_steps() -> None:
    assert rr.parse_steps("5, 25,50,100") == (5, 25, 50, 100)


@pytest.mark.parametrize(("flag", "kwargs", "message"), [
    (FLAG, {"variant": "blue"}, r"no variant 'blue' \(variants: off, on\)"),
    ({"state": "ENABLED"}, {}, "no variants map"),
    (FLAG, {"every": 0}, "--every must be a positive"),
    (FLAG, {"every": -5}, "--every must be a positive"),
    (FLAG, {"steps": (50, 10)}, "strictly increasing"),
    (FLAG, {"variant": "off"}, "already serves off to everyone"),
])
def test_plans_that_do_not_fit_are_refused(flag: Any, kwargs: dict[str, Any],
                                           message: str) -> None:
    args = {"variant": "on", "steps": (5, 50), "every": 60, "start": START, **kwargs}
    with pytest.raises(rr.RolloutError, match=message):
        rr.plan("f", flag, **args)


def test_is_ramping_tells_whether_the_flag_still_has_the_ramp() -> None:
    rollout = _rollout((5, 50))
    assert rr.is_ramping(rr.started(FLAG, rollout), rollout)
    assert not rr.is_ramping(FLAG, rollout) and not rr.is_ramping(None, rollout)


@pytest.mark.parametrize("previous", PREVIOUS)
def test_flagds_own_core_serves_every_user_what_flagedge_serves(previous: Any) -> None:
    """The rule is flagd-native: openfeature-flagd-core 2.x (v3 hashing) gives each user the
    variant flagedge's engine gives, inside a step, before the start and after the end."""
    import copy

    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    flag = rr.started(FLAG if previous is None else {**FLAG, "targeting": previous},
                      _rollout((30, 60, 100), previous))
    core = FlagdCore()
    core.set_flags(copy.deepcopy({"flags": {"f": flag}}))  # (it edits what it is given)
    flagd_time = "openfeature.contrib.tools.flagd.core.targeting.targeting.time"
    users = [f"user-{i}" for i in range(600)]
    for when in (START - 1, START + 1, START + EVERY + 1, START + 3 * EVERY + 1):
        ours = _variants_at(flag, when, users, FractionalHash.V3)
        with mock.patch(flagd_time, mock.Mock(time=lambda when=when: when)):
            theirs = {u: core.resolve_boolean_value("f", False, EvaluationContext(
                targeting_key=u)).variant for u in users}
        assert theirs == ours, when
