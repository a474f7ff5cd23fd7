"""bench/evaluator.py's workload: every evaluation gets a version string of its own (so the
sem_ver parse cache cannot answer a timed one), and the fractional agreement check's bucket
arithmetic is flagd's."""

from __future__ import annotations

from types import ModuleType

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from proxy.evaluation.jsonlogic.semver import parse_version
from tests.bench_module import load


@pytest.fixture(scope="module")
def evaluator() -> ModuleType:
    return load("evaluator")


def test_version_strings_never_repeat(evaluator: ModuleType) -> None:
    n = 200_000  # more than a whole run's contexts (7 runs x 20,000 + warm-ups)
    assert len({evaluator.version(i) for i in range(n)}) == n


def test_versions_are_valid_and_split_the_gate(evaluator: ModuleType) -> None:
    """Every string parses (the timed path is a real parse, not the invalid-input exit) and
    both outcomes of ">= 4.2.0" are common."""
    parsed = [parse_version(evaluator.version(i)) for i in range(30_000)]
    assert all(p is not None for p in parsed)
    share = sum(p[:3] >= (4, 2, 0) for p in parsed if p is not None) / len(parsed)
    assert 0.4 < share < 0.8


def test_fresh_ranges_of_contexts_share_nothing(evaluator: ModuleType) -> None:
    fresh = evaluator.Fresh()
    a = evaluator.contexts(fresh.take(5000), 5000)
    b = evaluator.contexts(fresh.take(5000), 5000)
    for key in ("targetingKey", "appVersion"):
        seen = {c[key] for c in a}
        assert len(seen) == 5000 and not seen & {c[key] for c in b}


def test_the_bucket_arithmetic_is_the_engines(evaluator: ModuleType) -> None:
    """The agreement check's own bucketing of flagedge's hash input gives flagedge's answers:
    the check compares engines, not two copies of a mistake."""
    flag_set = compile_document(evaluator.DOC)
    answers = []
    for c in evaluator.contexts(0, 2000):
        expected = evaluator.bucket(evaluator.flagedge_hash_input("fractional",
                                                                  c["targetingKey"]),
                                    evaluator.SPLIT)
        ours = evaluate(flag_set, "fractional", c).variant
        assert ours == expected
        answers.append(ours)
    assert 0.2 < answers.count("on") / len(answers) < 0.3  # the 25 % split


def test_a_ratio_below_ten_misses(evaluator: ModuleType) -> None:
    rows = evaluator.rows_for({"static": (100.0, 1500.0), "sem-ver": (1500.0, 14000.0)})
    assert [r.passed for r in rows] == [True, False]
    assert rows[1].baseline == "flagd-core 14000 ns, flagedge 1500 ns"
