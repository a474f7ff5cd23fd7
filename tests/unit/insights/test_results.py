"""An experiment's report: its shape (DESIGN §11) and its statistics on simulated users."""

import random

import pytest

from proxy.insights.results import Arm, experiment_report

WEIGHTS = {"control": 50, "treatment": 50}


def simulate(rng: random.Random, users: int, rates: dict[str, float],
             weights: dict[str, float]) -> list[Arm]:
    """Users split by ``weights``, each converting with their variant's true rate."""
    names = list(weights)
    assigned = dict.fromkeys(names, 0)
    converted = dict.fromkeys(names, 0)
    for _ in range(users):
        v = rng.choices(names, weights=[weights[n] for n in names])[0]
        assigned[v] += 1
        converted[v] += rng.random() < rates[v]
    return [Arm(n, assigned[n], converted[n]) for n in names]


def report(arms, weights=WEIGHTS):
    return experiment_report("checkout", "purchase", "7-0", arms, "control", weights)


def test_the_report_has_the_documented_shape():
    out = report([Arm("control", 1000, 100), Arm("treatment", 1000, 125)])
    assert set(out) == {"flag", "event", "revision", "control", "variants", "srm", "notes"}
    control, treatment = out["variants"]
    assert control["variant"] == "control" and control["diff"] is None
    assert control["rate"] == 0.1 and control["ci"][0] < 0.1 < control["ci"][1]
    assert treatment["diff"] == pytest.approx(0.025) and treatment["test"] == "z"
    assert treatment["diff_ci"][0] < 0.025 < treatment["diff_ci"][1]
    assert out["srm"]["warning"] is None and "repeatedly" in out["notes"][0]


def test_a_true_uplift_is_detected_and_each_rate_is_inside_its_interval():
    # 10 % base rate, 25 % relative uplift, 40,000 users: power well above 99.9 %.
    arms = simulate(random.Random(7), 40_000, {"control": 0.10, "treatment": 0.125}, WEIGHTS)
    out = report(arms)
    control, treatment = out["variants"]
    assert control["ci"][0] <= 0.10 <= control["ci"][1]
    assert treatment["ci"][0] <= 0.125 <= treatment["ci"][1]
    assert treatment["diff_ci"][0] <= 0.025 <= treatment["diff_ci"][1]
    assert treatment["p_value"] < 0.001 and treatment["diff_ci"][0] > 0


def test_an_a_a_split_is_flagged_at_about_the_nominal_rate():
    rng = random.Random(11)
    runs = 200
    flagged = sum(report(simulate(rng, 4_000, {"control": 0.1, "treatment": 0.1}, WEIGHTS))
                  ["variants"][1]["p_value"] < 0.05 for _ in range(runs))
    assert flagged <= 0.05 * runs * 2  # ~10 expected; 20 would be a broken test statistic
    assert flagged >= 1  # ... and a p-value that never fires is broken too


def test_a_forced_split_off_its_weights_warns_of_sample_ratio_mismatch():
    arms = simulate(random.Random(3), 10_000, {"control": 0.1, "treatment": 0.1},
                    {"control": 60, "treatment": 40})
    out = report(arms)  # the flag says 50/50
    assert out["srm"]["p_value"] < 0.001 and "sample ratio mismatch" in out["srm"]["warning"]


def test_several_arms_are_holm_corrected():
    arms = [Arm("control", 2000, 200), Arm("b", 2000, 240), Arm("c", 2000, 230)]
    out = experiment_report("f", "e", "1-0", arms, "control", {"control": 1, "b": 1, "c": 1})
    b, c = out["variants"][1:]
    assert b["p_value"] == pytest.approx(min(1, 2 * b["p_value_unadjusted"]))
    assert c["p_value"] >= b["p_value"] >= b["p_value_unadjusted"]


def test_small_counts_take_fishers_test_and_an_empty_arm_has_no_difference():
    out = report([Arm("control", 10, 1), Arm("treatment", 10, 6)])
    assert out["variants"][1]["test"] == "fisher"
    empty = report([Arm("control", 0, 0), Arm("treatment", 5, 1)])
    assert empty["variants"][0]["rate"] is None and empty["variants"][1]["diff"] is None
    with pytest.raises(ValueError, match="control variant"):
        experiment_report("f", "e", "1", [Arm("a", 1, 0)], "control", {"a": 1})
