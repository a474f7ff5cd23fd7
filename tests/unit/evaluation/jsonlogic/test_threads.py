"""Compiled rules are shared by every thread that evaluates them (the in-process provider
lets an application evaluate from many threads): the `prev` register json-logic-engine's
compiled comparisons read (logic.py) must be one per evaluation, not one per compiled rule.

Each rule below has an answer that depends on the register: ``x == y`` with y null compares
x against null when the register holds null, but against 0 if another thread's ``0`` is in
the register; chained ``<`` checks each operand against the register a var just assigned.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.compiler import compile_logic

RULES: list[Any] = [
    {"==": [{"var": "x"}, {"var": "y"}]},  # a register pair
    {"!=": [{"var": "x"}, {"var": "y"}]},
    {"<": [{"var": "x"}, {"var": "y"}, {"var": "z"}]},  # a register chain
    {"<=": [{"var": "x"}, {"var": "y"}, {"var": "z"}]},
    {"==": [{"var": "x"}, {"==": [{"var": "y"}, {"var": "z"}]}]},  # nested, recorded
]
CONTEXTS: list[dict[str, Any]] = [
    {"x": 0, "y": None, "z": 0},
    {"x": 0, "y": 0, "z": 0},
    {"x": None, "y": 0, "z": None},
    {"x": "", "y": None, "z": 1},
    {"x": -1, "y": None, "z": 0},
    {"x": None, "y": "", "z": None},
    {"x": False, "y": 0, "z": None},
    {"x": 1, "y": 2, "z": 3},
]
THREADS = 8
ROUNDS = 3000


@pytest.fixture
def interleaving() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, so a race shows in a short run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("rule", RULES, ids=[repr(r)[:50] for r in RULES])
def test_a_compiled_rule_gives_each_thread_its_own_answer(rule: Any, interleaving: None) -> None:
    compiled, cc = compile_logic(rule)
    assert not cc.problems
    run = as_fn(compiled)
    expected = [run(ctx) for ctx in CONTEXTS]  # single-threaded: the answer for each context
    wrong: list[tuple[int, Any, Any]] = []
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        ctx, want = CONTEXTS[i], expected[i]
        start.wait()
        for _ in range(ROUNDS):
            got = run(ctx)
            if got != want or type(got) is not type(want):
                wrong.append((i, got, want))
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
