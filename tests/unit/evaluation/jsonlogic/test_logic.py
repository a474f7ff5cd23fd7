"""Logic and comparisons (logic.py): if/?:, and/or, !/!!, == === != !== < <= > >=, as
flagd's JS evaluator has them.

Expected values are json-logic-engine 5.0.7's answers (compiled mode, as flagd-core builds
targeting), checked in node: JS truthiness with ``[]`` falsy and ``"0"`` truthy, loose
``==`` with JS coercion, chained ``<``/``<=`` as "between".
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.jsonlogic.compiler import apply, compile_logic
from proxy.evaluation.jsonlogic.jsvalue import Const
from tests.unit.evaluation.jsonlogic.same import same

DATA: dict[str, Any] = {
    "i": 7, "fl": 1.5, "num": "7", "s": "abc", "n": None, "t": True, "f": False, "z": 0,
    "zs": "0", "e": "", "emp": [], "eo": {}, "arr": [1], "a0": [0], "tier": "gold", "age": 30,
}

CASES = [
    # if: the first truthy condition's branch, else the last argument (or null)
    ({"if": [{"var": "t"}, "yes", "no"]}, DATA, "yes"),
    ({"if": [{"var": "z"}, "yes", "no"]}, DATA, "no"),
    ({"if": [{"var": "zs"}, "yes", "no"]}, DATA, "yes"),  # "0" is truthy
    ({"if": [{"var": "emp"}, "yes", "no"]}, DATA, "no"),  # [] is falsy
    ({"if": [{"var": "eo"}, "yes", "no"]}, DATA, "no"),  # so is {}
    ({"if": [{"var": "arr"}, "yes", "no"]}, DATA, "yes"),
    ({"if": [{"var": "e"}, "yes", "no"]}, DATA, "no"),
    ({"if": [{"var": "n"}, "yes", "no"]}, DATA, "no"),
    ({"if": [{"var": "f"}, "a", {"var": "z"}, "b", {"var": "s"}, "c", "d"]}, DATA, "c"),
    ({"if": [{"var": "f"}, "a", {"var": "z"}, "b", "d"]}, DATA, "d"),
    ({"if": [{"var": "f"}, "a", {"var": "z"}, "b"]}, DATA, None),  # no else: null
    ({"if": [{"var": "f"}, "a"]}, DATA, None),
    ({"if": [{"var": "t"}, "a"]}, DATA, "a"),
    ({"if": [{"var": "s"}]}, DATA, "abc"),  # a lone argument is the answer
    ({"if": [True, {"var": "s"}, "no"]}, DATA, "abc"),
    ({"if": [False, "no", {"var": "i"}]}, DATA, 7),
    ({"?:": [{"var": "t"}, "yes", "no"]}, DATA, "yes"),
    ({"if": []}, DATA, None),
    # and / or: the first falsy / truthy operand, else the last
    ({"and": [{"var": "t"}, {"var": "s"}, {"var": "i"}]}, DATA, 7),
    ({"and": [{"var": "t"}, {"var": "z"}, {"var": "i"}]}, DATA, 0),
    ({"and": [{"var": "emp"}, True]}, DATA, []),
    ({"or": [{"var": "z"}, {"var": "e"}, {"var": "s"}]}, DATA, "abc"),
    ({"or": [{"var": "z"}, {"var": "f"}]}, DATA, False),
    ({"or": [{"var": "n"}, "fallback"]}, DATA, "fallback"),
    ({"or": [{"var": "zs"}, "fallback"]}, DATA, "0"),
    ({"and": []}, DATA, None),
    ({"or": []}, DATA, None),
    # ! and !!: JsonLogic truthiness as a boolean
    ({"!": [{"var": "emp"}]}, DATA, True),
    ({"!": [{"var": "zs"}]}, DATA, False),
    ({"!": {"var": "z"}}, DATA, True),
    ({"!!": [{"var": "eo"}]}, DATA, False),
    ({"!!": [{"var": "s"}]}, DATA, True),
    ({"!!": [{"var": "n"}]}, DATA, False),
    # == and != coerce like JS
    ({"==": [{"var": "i"}, "7"]}, DATA, True),
    ({"==": [{"var": "num"}, 7]}, DATA, True),
    ({"==": [{"var": "i"}, 7.0]}, DATA, True),
    ({"==": [{"var": "t"}, 1]}, DATA, True),
    ({"==": [{"var": "f"}, "0"]}, DATA, True),
    ({"==": [{"var": "z"}, ""]}, DATA, True),
    ({"==": [{"var": "tier"}, "gold"]}, DATA, True),
    ({"==": [{"var": "tier"}, "Gold"]}, DATA, False),
    ({"==": [{"var": "n"}, {"var": "nope"}]}, DATA, True),
    ({"==": [{"var": "e"}, None]}, DATA, False),
    # null: compiled `a == b` is `(prev = a) == compareCheck(b, prev)`, which turns a null
    # against a literal falsy value into a match; a var on the right overwrites `prev` first
    ({"==": [{"var": "n"}, 0]}, DATA, True),
    ({"!=": [{"var": "n"}, 0]}, DATA, False),
    ({"==": [0, {"var": "n"}]}, DATA, False),
    ({"==": [{"var": "n"}, {"var": "z"}]}, DATA, False),
    ({"!=": [{"var": "i"}, "7"]}, DATA, False),
    ({"!=": [{"var": "tier"}, "silver"]}, DATA, True),
    # === and !== do not
    ({"===": [{"var": "i"}, "7"]}, DATA, False),
    ({"===": [{"var": "i"}, 7.0]}, DATA, True),
    ({"===": [{"var": "t"}, 1]}, DATA, False),
    ({"===": [{"var": "tier"}, "gold"]}, DATA, True),
    ({"!==": [{"var": "num"}, 7]}, DATA, True),
    ({"!==": [{"var": "n"}, None]}, DATA, False),
    # < <= > >=: numbers, numeric strings, strings among themselves
    ({"<": [{"var": "i"}, 10]}, DATA, True),
    ({"<": [{"var": "num"}, 10]}, DATA, True),  # "7" < 10 numerically
    ({"<": [{"var": "num"}, "10"]}, DATA, False),  # "7" < "10" as strings
    ({"<": [{"var": "s"}, "abd"]}, DATA, True),
    ({"<=": [{"var": "i"}, 7]}, DATA, True),
    ({">": [{"var": "fl"}, 1]}, DATA, True),
    ({">=": [{"var": "age"}, "30"]}, DATA, True),
    ({">": [{"var": "n"}, -1]}, DATA, True),  # null is 0
    # chained: between (exclusive / inclusive)
    ({"<": [18, {"var": "age"}, 65]}, DATA, True),
    ({"<": [18, {"var": "age"}, 30]}, DATA, False),
    ({"<=": [18, {"var": "age"}, 30]}, DATA, True),
    ({"<=": [31, {"var": "age"}, 40]}, DATA, False),
    ({"<": [1, {"var": "i"}, {"var": "num"}]}, DATA, False),  # 7 < "7" fails the chain
    # nested
    ({"and": [{">=": [{"var": "age"}, 18]}, {"in": [{"var": "tier"}, ["gold", "platinum"]]}]}, DATA, True),
    ({"if": [{"or": [{"==": [{"var": "tier"}, "silver"]}, {"<": [{"var": "age"}, 21]}]}, "x", "y"]}, DATA, "y"),
]


@pytest.mark.parametrize(("logic", "data", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_matches_reference(logic: Any, data: Any, expected: Any) -> None:
    assert same(apply(logic, data), expected)


INTERPRETED = [
    # the interpreter's ! and !! look inside a single operand's array value
    ({"!": [{"var": "a0"}]}, True),
    ({"!!": {"var": "a0"}}, False),
    # and its comparisons coerce each pair as written (no `prev` register)
    ({"==": [0, {"var": "n"}]}, True),
    # a 1- or 2-argument if (interpreted itself) without a true condition is null
    ({"if": [{"var": "z"}, "a"]}, None),
]


@pytest.mark.parametrize(("logic", "expected"), INTERPRETED, ids=[repr(c[0])[:60] for c in INTERPRETED])
def test_interpreted_below_a_short_if(logic: Any, expected: Any) -> None:
    assert same(apply({"if": [True, logic]}, DATA), expected)


def test_compiled_unary_operators_test_the_array_itself() -> None:
    assert apply({"!": [{"var": "a0"}]}, DATA) is False  # [0] is truthy
    assert apply({"!!": {"var": "a0"}}, DATA) is True


def test_where_the_reference_throws_on_mixed_types_the_answer_is_plain_js() -> None:
    # json-logic-engine throws here; DESIGN §2: "follow plain JavaScript"
    assert apply({"==": [{"var": "arr"}, 1]}, DATA) is True  # [1] == 1
    assert apply({"==": [{"var": "arr"}, "1"]}, DATA) is True
    assert apply({"if": [True, {"<": [{"var": "s"}, {"var": "i"}]}]}, DATA) is False  # NaN < 7


def test_constant_branches_are_dropped_and_constant_rules_folded() -> None:
    compiled, cc = compile_logic({"if": [{"==": [1, "1"]}, "on", "off"]})
    assert not cc.problems and compiled.__class__ is Const
    assert compiled.value == "on"  # type: ignore[union-attr]
    compiled, _ = compile_logic({"if": [False, "a", {"var": "x"}, "b", "c"]})
    assert compiled({"x": 1}) == "b" and compiled({"x": 0}) == "c"  # type: ignore[operator]


# The reference refuses the first three while compiling and fails the last when it runs;
# ours reports all of them at load (wrong arguments are validation problems: compiler.py).
LOAD_PROBLEMS = [
    ({"if": "x"}, "if takes an array"),
    ({"and": "x"}, "and takes an array"),
    ({"==": [1]}, "== takes at least 2 operands"),
    ({"<": {"var": "x"}}, "< takes an array"),
]


@pytest.mark.parametrize(("logic", "message"), LOAD_PROBLEMS, ids=[repr(c[0])[:60] for c in LOAD_PROBLEMS])
def test_wrong_arguments_are_problems_at_load(logic: Any, message: str) -> None:
    _, cc = compile_logic(logic)
    assert any(message in p.message for p in cc.problems), cc.problems


# The commonest shapes run as one closure each (logic.py: ``_if_andor``, ``cmp_var_str``);
# they must answer as the operators composed do.
VALUES = [*sorted(DATA), "missing"]


@pytest.mark.parametrize("op", ["and", "or"])
def test_an_if_over_a_two_operand_and_or_answers_as_the_two_composed(op: str) -> None:
    def rule(x: str, y: str) -> dict[str, Any]:
        return {"if": [{op: [{"var": x}, {"var": y}]}, "T", "F"]}

    compiled, _ = compile_logic(rule("t", "f"))
    assert compiled.__name__ == f"if_{op}2"  # type: ignore[union-attr]  # the inlined form
    for x in VALUES:
        for y in VALUES:
            inner = apply({op: [{"var": x}, {"var": y}]}, DATA)
            expected = apply({"if": [{"var": "v"}, "T", "F"]}, {"v": inner})
            assert apply(rule(x, y), DATA) == expected, (x, y)


@pytest.mark.parametrize("op", ["==", "===", "!=", "!=="])
def test_a_var_against_a_string_literal_answers_as_the_interpreter(op: str) -> None:
    compiled, _ = compile_logic({op: [{"var": "s"}, "abc"]})
    assert compiled.__name__ == "cmp_var_str"  # type: ignore[union-attr]  # the inlined form
    for key in VALUES:
        for literal in ["abc", "7", "0", "", "1", "gold", "true", "null"]:
            rule = {op: [{"var": key}, literal]}
            interpreted = apply({"if": [True, rule]}, DATA)  # (a short if: interpreted)
            assert same(apply(rule, DATA), interpreted), (key, literal)
            assert same(apply(rule, [DATA]), apply({"if": [True, rule]}, [DATA]))  # not a dict
