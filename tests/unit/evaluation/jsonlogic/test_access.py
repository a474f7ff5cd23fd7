"""Data access (access.py): var, missing, missing_some, as flagd's JS evaluator has them.

Expected values are json-logic-engine 5.0.7's answers (compiled mode, as flagd-core builds
targeting), checked in node; the interpreted forms below a short ``if`` likewise.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.jsonlogic.compiler import apply, compile_logic
from tests.unit.evaluation.jsonlogic.same import same

DATA: dict[str, Any] = {
    "a": {"b": {"c": 3}, "list": [10, 20, 30]},
    "n": None, "z": 0, "f": False, "e": "", "s": "xyz",
    "a.b": "escaped", "user": {"email": "ada@example.com", "plan": None},
}

CASES = [
    # var: a path into the data; dots walk objects and arrays
    ({"var": "s"}, DATA, "xyz"),
    ({"var": "a.b.c"}, DATA, 3),
    ({"var": ["a.b.c"]}, DATA, 3),
    ({"var": "a.list.1"}, DATA, 20),
    ({"var": "a.list.length"}, DATA, 3),
    ({"var": "s.length"}, DATA, 3),
    ({"var": "a\\.b"}, DATA, "escaped"),  # an escaped dot is part of the key
    ({"var": 1}, ["x", "y"], "y"),  # a number is a key too
    ({"var": "0"}, ["x", "y"], "x"),
    ({"var": "user.email"}, DATA, "ada@example.com"),
    # missing: null (not an error); the whole data for an empty path
    ({"var": "nope"}, DATA, None),
    ({"var": "a.nope.deeper"}, DATA, None),
    ({"var": "s.b"}, DATA, None),  # a string has no property b
    ({"var": "z.b"}, DATA, None),
    ({"var": ""}, {"k": 1}, {"k": 1}),
    ({"var": []}, {"k": 1}, {"k": 1}),
    ({"var": "toString"}, DATA, None),  # a prototype method is no value
    # defaults: compiled var is `a?.b ?? default`, so null and missing both give it ...
    ({"var": ["nope", "dflt"]}, DATA, "dflt"),
    ({"var": ["n", "dflt"]}, DATA, "dflt"),
    ({"var": ["user.plan", "free"]}, DATA, "free"),
    ({"var": ["a.b.c.d", 9]}, DATA, 9),
    # ... but falsy values are values
    ({"var": ["z", "dflt"]}, DATA, 0),
    ({"var": ["f", "dflt"]}, DATA, False),
    ({"var": ["e", "dflt"]}, DATA, ""),
    # computed defaults and keys
    ({"var": ["nope", {"var": "s"}]}, DATA, "xyz"),
    ({"var": {"cat": ["a", ".b", ".c"]}}, DATA, 3),
    ({"var": {"if": [{"var": "z"}, "s", "a.list.0"]}}, DATA, 10),
    # missing: the keys that are not there, in order (null and falsy values are there)
    ({"missing": ["s", "nope", "a.b.c", "a.b.x"]}, DATA, ["nope", "a.b.x"]),
    ({"missing": ["n", "z", "f", "e"]}, DATA, []),
    ({"missing": "nope"}, DATA, ["nope"]),
    ({"missing": []}, DATA, []),
    ({"missing": ["a", "b"]}, None, ["a", "b"]),
    ({"missing": {"merge": [["s"], ["nope"]]}}, DATA, ["nope"]),
    ({"missing": ["toString"]}, DATA, []),  # found on the prototype
    # missing_some: [] when at least NEED keys are present, else the missing ones
    ({"missing_some": [1, ["s", "nope", "nada"]]}, DATA, []),
    ({"missing_some": [2, ["s", "nope", "nada"]]}, DATA, ["nope", "nada"]),
    ({"missing_some": [0, ["nope"]]}, DATA, []),
    ({"missing_some": [3, ["s", "a.b.c", "z"]]}, DATA, []),
    ({"missing_some": [1, ["a.b.x", "user.email"]]}, DATA, []),
]


@pytest.mark.parametrize(("logic", "data", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_matches_reference(logic: Any, data: Any, expected: Any) -> None:
    assert same(apply(logic, data), expected)


INTERPRETED = [
    # the interpreter returns a null value as null, where compiled code gives the default
    ({"var": ["n", "dflt"]}, None),
    ({"var": ["nope", "dflt"]}, "dflt"),
    # and walks 2- and 3-part paths with `&&`: a falsy step is the answer itself
    ({"var": "z.b"}, 0),
    ({"var": "e.b.c"}, ""),
    ({"var": "a.b.c"}, 3),
]


@pytest.mark.parametrize(("logic", "expected"), INTERPRETED, ids=[repr(c[0])[:60] for c in INTERPRETED])
def test_interpreted_var_below_a_short_if(logic: Any, expected: Any) -> None:
    assert same(apply({"if": [True, logic]}, DATA), expected)


def test_var_reads_a_dict_fast_and_anything_else_like_js() -> None:
    compiled, cc = compile_logic({"var": "k"})
    assert not cc.problems
    assert compiled({"k": "v"}) == "v"  # type: ignore[operator]
    assert compiled(["a"]) is None  # type: ignore[operator]
    assert compiled("text") is None  # type: ignore[operator]
    assert compiled(None) is None  # type: ignore[operator]


# On purpose stricter than the reference, which answers these at run time (it gives "b",
# null, and throws): wrong arguments are validation problems (compiler.py's docstring).
LOAD_PROBLEMS = [
    ({"var": ["a", "b", "c"]}, "var takes 1 or 2 arguments"),
    ({"var": [["a"]]}, "var path must be a string or a number"),
    ({"missing_some": [1]}, "missing_some takes 2 arguments"),
]


@pytest.mark.parametrize(("logic", "message"), LOAD_PROBLEMS, ids=[repr(c[0])[:60] for c in LOAD_PROBLEMS])
def test_wrong_arguments_are_problems_at_load(logic: Any, message: str) -> None:
    _, cc = compile_logic(logic)
    assert any(message in p.message for p in cc.problems), cc.problems


def test_reads_are_recorded_for_the_engine() -> None:
    _, plain = compile_logic({"var": "user.email"})
    assert not plain.needs_flagd and not plain.uses_timestamp
    _, clock = compile_logic({"var": "$flagd.timestamp"})
    assert clock.needs_flagd and clock.uses_timestamp
    _, whole = compile_logic({"var": ""})
    assert whole.needs_flagd  # the whole data includes $flagd
    _, keys = compile_logic({"missing": ["$flagd.flagKey"]})
    assert keys.needs_flagd and not keys.uses_timestamp
