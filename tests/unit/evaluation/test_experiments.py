"""Experiment flags (DESIGN §11): the engine tells a split assignment from a variant a
condition named, and each experiment has a revision that moves only with what decides its
assignments."""

import copy

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate, evaluate_all
from proxy.model import FractionalHash

DOC = {"$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.test"]}},
       "flags": {
           "ranking": {"state": "ENABLED", "defaultVariant": "a", "variants": {"a": 1, "b": 2},
                       "metadata": {"kind": "experiment", "description": "two arms"},
                       "targeting": {"if": [{"$ref": "staff"}, "b",
                                            {"fractional": [["a", 50], ["b", 50]]}]}},
           "rollout": {"state": "ENABLED", "defaultVariant": "a", "variants": {"a": 1, "b": 2},
                       "targeting": {"fractional": [["a", 50], ["b", 50]]}},
           "stepped": {"state": "ENABLED", "defaultVariant": "a", "variants": {"a": 1, "b": 2},
                       "metadata": {"experimentId": "x-1"},
                       "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 0]},
                                            {"fractional": [["a", 50], ["b", 50]]}, "a"]}}}}


def test_only_users_the_split_chose_are_assigned():
    fs = compile_document(DOC)
    assert fs.experiments == ("ranking",)
    split = evaluate(fs, "ranking", {"targetingKey": "u1", "email": "u1@mail.test"})
    staff = evaluate(fs, "ranking", {"targetingKey": "u2", "email": "u2@corp.test"})
    assert split.assigned and not staff.assigned and staff.variant == "b"
    # On the wire nothing changes: flagd's reason, no extra field.
    assert split.to_ofrep() == {"key": "ranking", "reason": "TARGETING_MATCH",
                                "variant": split.variant, "value": split.value,
                                "metadata": {"kind": "experiment", "description": "two arms"}}
    bulk = {r.key: r for r in evaluate_all(fs, {"targetingKey": "u1", "email": "u1@mail.test"})}
    assert bulk["ranking"].assigned and not bulk["rollout"].assigned  # not an experiment
    assert not bulk["stepped"].assigned  # time-stepped: not an experiment
    assert bulk["stepped"].variant in ("a", "b") and bulk["stepped"].error_code is None


def _as_plain_and_as_experiment(targeting: dict) -> tuple[dict, dict]:
    """Each user's result with the flag plain and with the same flag (the same key: it is
    part of the bucketing) an experiment."""
    flag = {"state": "ENABLED", "defaultVariant": "x", "variants": {"x": 1, "y": 2, "a": 3,
                                                                    "b": 4}, "targeting": targeting}
    evaluators = {"split": {"fractional": [["a", 50], ["b", 50]]}}
    users = [f"u{i}" for i in range(200)]
    out = []
    for meta in ({}, {"metadata": {"kind": "experiment"}}):
        fs = compile_document({"$evaluators": evaluators, "flags": {"f": {**flag, **meta}}})
        out.append({u: evaluate(fs, "f", {"targetingKey": u}) for u in users})
    return out[0], out[1]


def test_a_split_an_operator_consumes_is_a_value_not_an_assignment():
    # The rollout's step shape: a pick compared with a name; before, the experiment's marked
    # pick ("[object Object]" to the comparison) never equalled "a".
    plain, exp = _as_plain_and_as_experiment(
        {"if": [{"==": [{"fractional": [["a", 50], ["b", 50]]}, "a"]}, "x", "y"]})
    assert {r.variant for r in plain.values()} == {"x", "y"}
    assert {u: r.variant for u, r in exp.items()} == {u: r.variant for u, r in plain.items()}
    assert not any(r.assigned for r in exp.values())


def test_a_split_that_is_the_outcome_through_a_ref_is_an_assignment():
    plain, exp = _as_plain_and_as_experiment({"if": [{"==": [{"var": "targetingKey"}, "u1"]},
                                                     "x", {"$ref": "split"}]})
    assert {u: r.variant for u, r in exp.items()} == {u: r.variant for u, r in plain.items()}
    assert not exp["u1"].assigned
    assert all(r.assigned for u, r in exp.items() if u != "u1")


def test_the_revision_moves_with_the_split_not_with_descriptions():
    base = compile_document(DOC).flags["ranking"].experiment
    described = copy.deepcopy(DOC)
    described["flags"]["ranking"]["metadata"]["description"] = "renamed"
    assert compile_document(described).flags["ranking"].experiment == base
    reweighted = copy.deepcopy(DOC)
    reweighted["flags"]["ranking"]["targeting"]["if"][2]["fractional"][0][1] = 60
    assert compile_document(reweighted).flags["ranking"].experiment != base
    rerouted = copy.deepcopy(DOC)
    rerouted["$evaluators"]["staff"] = {"ends_with": [{"var": "email"}, "@staff.test"]}
    assert compile_document(rerouted).flags["ranking"].experiment != base
    v3 = compile_document(DOC, fractional_hash=FractionalHash.V3).flags["ranking"].experiment
    assert v3 != base  # another hashing generation re-buckets users
