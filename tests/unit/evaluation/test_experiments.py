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
