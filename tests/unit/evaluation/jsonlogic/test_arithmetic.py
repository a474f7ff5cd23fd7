"""Arithmetic (arithmetic.py): + - * / % min max, as flagd's JS evaluator has them.

Expected values are json-logic-engine 5.0.7's answers (compiled mode, as flagd-core builds
targeting), checked in node. Operands are coerced like JS ``+x`` (strings, null, booleans);
an object or array operand, or a NaN result, throws there, which flagd reports as a GENERAL
error: ours raises too.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.jsonlogic.compiler import apply, compile_logic
from proxy.evaluation.jsonlogic.jsvalue import Const
from tests.unit.evaluation.jsonlogic.same import same

DATA: dict[str, Any] = {
    "i": 7, "fl": 2.5, "num": "42", "neg": "-3", "n": None, "t": True, "f": False, "z": 0,
    "s": "abc", "e": "", "arr": [1, 2], "obj": {"a": 1}, "big": 2**53, "zs": "0",
}

CASES = [
    ({"+": [1, 2]}, DATA, 3),
    ({"+": [{"var": "i"}, 1]}, DATA, 8),
    ({"+": [{"var": "num"}, 1]}, DATA, 43),  # "42" -> 42, not "421"
    ({"+": [{"var": "neg"}, {"var": "fl"}]}, DATA, -0.5),
    ({"+": [{"var": "n"}, 1]}, DATA, 1),  # null -> 0
    ({"+": [{"var": "t"}, {"var": "f"}]}, DATA, 1),  # true -> 1, false -> 0
    ({"+": [{"var": "e"}, 5]}, DATA, 5),  # "" -> 0
    ({"+": [{"var": "i"}]}, DATA, 7),
    ({"+": [{"var": "num"}]}, DATA, 42),  # unary + is a cast to number
    ({"+": [0.1, {"var": "fl"}]}, DATA, 2.6),
    ({"+": [{"var": "big"}, 1]}, DATA, 2**53),  # one double: past 2^53 a 1 is lost
    ({"+": [1, {"var": "i"}, 3, {"var": "num"}]}, DATA, 53),
    ({"*": [{"var": "i"}, "3"]}, DATA, 21),
    ({"*": [{"var": "fl"}, 2]}, DATA, 5),
    ({"*": [{"var": "n"}, 5]}, DATA, 0),
    ({"-": [{"var": "i"}, 2]}, DATA, 5),
    ({"-": [{"var": "i"}]}, DATA, -7),  # unary minus
    ({"-": [{"var": "num"}, "2"]}, DATA, 40),
    ({"-": [10, {"var": "i"}, 1]}, DATA, 2),
    ({"/": [{"var": "i"}, 2]}, DATA, 3.5),
    ({"/": [{"var": "num"}, "6"]}, DATA, 7),
    ({"/": [{"var": "z"}, 5]}, DATA, 0),
    ({"%": [{"var": "i"}, 3]}, DATA, 1),
    ({"%": [-7, {"var": "i"}]}, DATA, 0),
    ({"%": [{"var": "neg"}, 2]}, DATA, -1),  # the sign of the dividend, as in JS
    ({"%": [{"var": "fl"}, 1]}, DATA, 0.5),
    ({"max": [{"var": "i"}, 3, 9]}, DATA, 9),
    ({"min": [{"var": "i"}, 3, 9]}, DATA, 3),
    ({"min": [{"var": "fl"}, -1]}, DATA, -1),
    ({"max": [{"var": "i"}]}, DATA, 7),
]


@pytest.mark.parametrize(("logic", "data", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_matches_reference(logic: Any, data: Any, expected: Any) -> None:
    assert same(apply(logic, data), expected)


def test_results_are_js_numbers() -> None:
    assert type(apply({"*": [{"var": "fl"}, 2]}, DATA)) is int  # 5, as JS prints it
    assert type(apply({"/": [{"var": "i"}, 2]}, DATA)) is float
    assert type(apply({"+": [{"var": "big"}, 1]}, DATA)) is float  # a double in JS


# Each throws in the reference at run time (flagd: GENERAL); ours raises too.
FAILS = [
    ({"+": [{"var": "s"}, 1]}, DATA),  # NaN
    ({"+": [{"var": "arr"}, 1]}, DATA),  # an array operand
    ({"+": [{"var": "obj"}]}, DATA),  # an object operand
    ({"*": [{"var": "s"}, 2]}, DATA),
    ({"-": [{"var": "s"}]}, DATA),
    ({"/": [1, {"var": "z"}]}, DATA),  # division by zero
    ({"/": [1, {"var": "n"}]}, DATA),  # null is 0
    ({"/": [1, {"var": "zs"}]}, DATA),  # "0" is 0
    ({"%": [{"var": "i"}, {"var": "z"}]}, DATA),  # x % 0 is NaN
    ({"max": [{"var": "num"}, 1]}, DATA),  # min/max take numbers only
    ({"min": [{"var": "n"}, 1]}, DATA),
    ({"max": [{"var": "t"}, 0]}, DATA),  # true is no number here
    ({"min": [{"var": "f"}, 1]}, DATA),
]


@pytest.mark.parametrize(("logic", "data"), FAILS, ids=[repr(c[0])[:60] for c in FAILS])
def test_throws_like_reference(logic: Any, data: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any exception becomes a GENERAL error
        apply(logic, data)


# The reference refuses these while compiling (flagd: PARSE_ERROR): problems at load.
LOAD_PROBLEMS = [
    ({"/": [{"var": "i"}, 0]}, "division by zero"),
    ({"/": [{"var": "i"}, "0"]}, "division by zero"),
    ({"+": [{"var": "i"}, "abc"]}, "is not a number"),
    ({"*": [{"var": "i"}, [1]]}, "is not a number"),
    ({"-": [{"var": "i"}, {}]}, "is not a number"),
]


@pytest.mark.parametrize(("logic", "message"), LOAD_PROBLEMS, ids=[repr(c[0])[:60] for c in LOAD_PROBLEMS])
def test_problems_at_load(logic: Any, message: str) -> None:
    _, cc = compile_logic(logic)
    assert any(message in p.message for p in cc.problems), cc.problems


def test_constant_arithmetic_is_folded() -> None:
    compiled, cc = compile_logic({"+": [1, {"*": [2, "3"]}, {"-": [4]}]})
    assert not cc.problems
    assert compiled.__class__ is Const and compiled.value == 3  # type: ignore[union-attr]


INTERPRETED = [
    # the interpreter's + and - look inside a single operand's array value
    ({"+": [{"var": "arr"}]}, 3),
    ({"-": [{"var": "arr"}]}, -1),
    ({"+": {"var": "arr"}}, 3),
    ({"-": [{"var": "n"}]}, 0),
]


@pytest.mark.parametrize(("logic", "expected"), INTERPRETED, ids=[repr(c[0])[:60] for c in INTERPRETED])
def test_interpreted_below_a_short_if(logic: Any, expected: Any) -> None:
    assert same(apply({"if": [True, logic]}, DATA), expected)


def test_an_interpreted_literal_zero_divisor_fails_when_run_not_at_load() -> None:
    compiled, cc = compile_logic({"if": [{"var": "t"}, {"/": [{"var": "i"}, 0]}]})
    assert not cc.problems
    assert compiled({"t": False}) is None  # type: ignore[operator]
    with pytest.raises(Exception):  # noqa: B017
        compiled({"t": True, "i": 1})  # type: ignore[operator]
