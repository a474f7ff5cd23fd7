"""JsonLogic operators against json-logic-engine 5.0.7 (flagd's JS engine).

The OK and ERR tables were produced by running each rule through the reference engine
(compiled mode, as flagd-core uses it) in node; a rule in ERR throws there, which flagd turns
into a GENERAL error, so ours must raise too.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.documents import validate_document, validate_evaluators
from proxy.evaluation.jsonlogic.compiler import apply, compile_logic
from proxy.evaluation.jsonlogic.jsvalue import JSThrow
from tests.unit.evaluation.jsonlogic.same import same

D: dict[str, Any] = {
    "x": 1, "s": "abc", "n": None, "z": 0, "e": "", "arr": [1, 2, 3], "obj": {"a": {"b": 2}},
    "t": True, "f": False, "num": "42", "fl": 1.5, "emp": [], "eo": {}, "sarr": ["a", "b"],
}

OK = [
    ({'var': 'x'}, D, 1),
    ({'var': 'obj.a.b'}, D, 2),
    ({'var': ['obj.a.c', 9]}, D, 9),
    ({'var': ['n', 'dflt']}, D, 'dflt'),
    ({'var': ['z', 'dflt']}, D, 0),
    ({'var': 'arr.1'}, D, 2),
    ({'var': 1}, [10, 20], 20),
    ({'var': 's.length'}, D, 3),
    ({'var': 'arr.length'}, D, 3),
    ({'var': 'missing'}, D, None),
    ({'var': 's.toString'}, D, None),
    ({'var': 'a\\.b'}, {'a.b': 5}, 5),
    ({'var': ''}, 7, 7),
    ({'var': ['', 5]}, 3, 3),
    ({'missing': ['x', 'nope', 'obj.a.b', 'obj.a.z']}, D, ['nope', 'obj.a.z']),
    ({'missing': ['n']}, D, []),
    ({'missing': []}, D, []),
    ({'missing': {'merge': [['x', 'q'], 's']}}, D, ['q']),
    ({'missing_some': [1, ['x', 'q']]}, D, []),
    ({'missing_some': [2, ['x', 'q', 'r']]}, D, ['q', 'r']),
    ({'missing_some': [0, ['q']]}, D, []),
    ({'if': []}, D, None),
    ({'if': [{'var': 'x'}]}, D, 1),
    ({'if': [{'var': 'z'}, 1]}, D, None),
    ({'if': [{'var': 'emp'}, 'y', 'n']}, D, 'n'),
    ({'if': [{'var': 'eo'}, 'y', 'n']}, D, 'n'),
    ({'if': ['0', 'y', 'n']}, D, 'y'),
    ({'if': [{'var': 'z'}, 1, {'var': 'x'}, 2, 3]}, D, 2),
    ({'if': [{'var': 'z'}, 1, {'var': 'e'}, 2]}, D, None),
    ({'?:': [{'var': 't'}, 'y', 'n']}, D, 'y'),
    ({'or': []}, D, None),
    ({'or': [{'var': 'z'}, {'var': 'e'}, {'var': 's'}]}, D, 'abc'),
    ({'or': [{'var': 'z'}, {'var': 'emp'}]}, D, []),
    ({'and': [{'var': 'x'}, {'var': 's'}]}, D, 'abc'),
    ({'and': [{'var': 'x'}, {'var': 'eo'}, 1]}, D, {}),
    ({'!': [{'var': 'emp'}]}, D, True),
    ({'!': {'var': 's'}}, D, False),
    ({'!!': ['0']}, D, True),
    ({'!!': [{'var': 'eo'}]}, D, False),
    ({'!': []}, D, True),
    ({'==': [1, 1.0]}, D, True),
    ({'===': [1, 1.0]}, D, True),
    ({'==': ['1', 1]}, D, True),
    ({'===': ['1', 1]}, D, False),
    ({'==': [None, 0]}, D, True),
    ({'==': [{'var': 'nope'}, False]}, D, True),
    ({'==': [{'var': 'n'}, {'var': 'z'}]}, D, False),
    ({'!=': [{'var': 'x'}, '1']}, D, False),
    ({'!==': [{'var': 'x'}, '1']}, D, True),
    ({'==': [{'var': 't'}, 1]}, D, True),
    ({'<': [1, {'var': 'x'}, 3]}, D, False),
    ({'<': [1, 1, 3]}, D, False),
    ({'<=': [1, {'var': 'x'}, 1]}, D, True),
    ({'<': ['10', 9]}, D, False),
    ({'<': ['a', 'b']}, D, True),
    ({'>': [{'var': 'num'}, 41]}, D, True),
    ({'>=': [{'var': 'fl'}, 1.5]}, D, True),
    ({'<': [{'var': 'n'}, 1]}, D, True),
    ({'<=': [{'var': 'n'}, 0]}, D, True),
    ({'>': ['b', 'a']}, D, True),
    ({'==': [{'var': 's'}, 'abc']}, D, True),
    ({'+': [1, 1]}, D, 2),
    ({'+': [0.1, 0.2]}, D, 0.30000000000000004),
    ({'+': ['1', '2']}, D, 3),
    ({'+': []}, D, 0),
    ({'+': [{'var': 't'}, {'var': 'n'}]}, D, 1),
    ({'+': {'var': 'num'}}, D, 42),
    ({'-': [5, 2]}, D, 3),
    ({'-': [{'var': 'x'}]}, D, -1),
    ({'-': ['5', 2]}, D, 3),
    ({'*': [2, {'var': 'fl'}]}, D, 3),
    ({'*': []}, D, 1),
    ({'/': [1, 2]}, D, 0.5),
    ({'/': [10, 4]}, D, 2.5),
    ({'/': [{'var': 'num'}]}, D, 0.023809523809523808),
    ({'%': [-7, 3]}, D, -1),
    ({'%': [7.5, 2]}, D, 1.5),
    ({'%': [{'var': 'num'}, 5]}, D, 2),
    ({'max': [3, 1, 2]}, D, 3),
    ({'min': [{'var': 'x'}, 0.5]}, D, 0.5),
    ({'cat': ['a', 1, 2.5, True]}, D, 'a12.5true'),
    ({'cat': ['a', None]}, D, 'a'),
    ({'cat': ['a', {'var': 'n'}]}, D, 'anull'),
    ({'cat': [{'var': 'arr'}, '|', {'var': 'eo'}]}, D, '1,2,3|[object Object]'),
    ({'cat': [1e-06, 1e-07, 1e+21]}, D, '0.0000011e-71e+21'),
    ({'substr': ['jsonlogic', 4]}, D, 'logic'),
    ({'substr': ['jsonlogic', -5]}, D, 'logic'),
    ({'substr': ['jsonlogic', 1, 3]}, D, 'son'),
    ({'substr': ['jsonlogic', 4, -2]}, D, 'log'),
    ({'substr': [{'var': 's'}, '-1']}, D, 'c'),
    ({'in': ['Spring', 'Springfield']}, D, True),
    ({'in': ['', {'var': 'e'}]}, D, False),
    ({'in': [1, {'var': 's'}]}, D, False),
    ({'in': [{'var': 'x'}, 'a1b']}, D, True),
    ({'in': ['b', {'var': 'sarr'}]}, D, True),
    ({'in': [1.0, {'var': 'arr'}]}, D, True),
    ({'in': [True, [1]]}, D, False),
    ({'in': [None, [None]]}, D, True),
    ({'in': [1, {'var': 'n'}]}, D, False),
    ({'merge': []}, D, []),
    ({'merge': [[1, [2]], 3]}, D, [1, [2], 3]),
    ({'merge': {'var': 'arr'}}, D, [1, 2, 3]),
    ({'merge': [{'var': 'n'}, {'var': 'sarr'}]}, D, [None, 'a', 'b']),
    ({'map': [{'var': 'arr'}, {'*': [{'var': ''}, 2]}]}, D, [2, 4, 6]),
    ({'map': [{'var': 'nope'}, 1]}, D, []),
    ({'filter': [{'var': 'arr'}, {'>': [{'var': ''}, 1]}]}, D, [2, 3]),
    ({'reduce': [{'var': 'arr'}, {'+': [{'var': 'current'}, {'var': 'accumulator'}]}, 10]}, D, 16),
    ({'reduce': [{'var': 'arr'}, {'+': [{'var': 'current'}, {'var': 'accumulator'}]}]}, D, 6),
    ({'all': [{'var': 'arr'}, {'>': [{'var': ''}, 0]}]}, D, True),
    ({'all': [{'var': 'emp'}, True]}, D, False),
    ({'all': [{'var': 'nope'}, False]}, D, True),
    ({'some': [{'var': 'arr'}, {'==': [{'var': ''}, 2]}]}, D, True),
    ({'some': [{'var': 'nope'}, True]}, D, False),
    ({'none': [{'var': 'arr'}, {'==': [{'var': ''}, 5]}]}, D, True),
]

ERR = [
    ({'+': [{'var': 's'}, 1]}, D),  # reference: {'throw': 'NaN'}
    ({'+': [{'var': 'arr'}, 1]}, D),  # reference: {'throw': 'NaN'}
    ({'/': [{'var': 'x'}, {'var': 'z'}]}, D),  # reference: {'throw': 'NaN'}
    ({'%': [{'var': 'x'}, {'var': 'z'}]}, D),  # reference: {'throw': 'NaN'}
    ({'max': [{'var': 's'}, 1]}, D),  # reference: {'throw': 'Invalid Arguments'}
    ({'substr': [{'var': 'x'}, 0]}, D),  # reference: {'throw': 'string.substr is not a function'}
    ({'in': [1, {'var': 'x'}]}, D),  # reference: {'throw': '((intermediate value)(intermediate value)(intermediate value) || []).includes is not a function'}
    ({'reduce': [{'var': 'emp'}, {'+': [{'var': 'current'}, {'var': 'accumulator'}]}]}, D),  # reference: {'throw': 'Reduce of empty array with no initial value'}
    ({'reduce': [{'var': 'arr'}, {'merge': [{'var': 'accumulator'}, [[{'var': 'current'}]]]}, []]}, D),  # reference: {'throw': 'Exceeded Allowed Depth'}
    ({'map': [{'var': 's'}, 1]}, D),  # reference: {'throw': '((intermediate value)(intermediate value)(intermediate value) || []).map is not a function'}
]


@pytest.mark.parametrize(("logic", "data", "expected"), OK, ids=[repr(c[0])[:60] for c in OK])
def test_matches_reference(logic: Any, data: Any, expected: Any) -> None:
    assert same(apply(logic, data), expected)


@pytest.mark.parametrize(("logic", "data"), ERR, ids=[repr(c[0])[:60] for c in ERR])
def test_throws_like_reference(logic: Any, data: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any exception becomes a GENERAL error
        apply(logic, data)


def test_numbers_are_js_numbers() -> None:
    two = apply({"+": [1, 1]})
    assert two == 2 and type(two) is int
    half = apply({"/": [1, 2]})
    assert half == 0.5 and type(half) is float
    assert type(apply({"*": [1.5, 2]})) is int  # 3, as JS prints it
    assert apply({"==": [1, 1.0]}) is True and apply({"===": [1, 1.0]}) is True
    assert apply({"===": [1, True]}) is False and apply({"==": [1, True]}) is True


def test_comparison_where_reference_throws_follows_plain_js() -> None:
    # json-logic-engine throws NaN on these; DESIGN §2: answer as JavaScript would
    assert apply({"!=": [True, "true"]}) is True  # true != NaN
    assert apply({"==": [{"var": "a"}, {"var": "b"}]}, {"a": [1], "b": 1}) is True  # "1" == 1
    assert apply({"<": [{"var": "a"}, 2]}, {"a": "abc"}) is False  # NaN < 2


def test_var_operands_compare_as_plain_js_but_literals_get_null_coercion() -> None:
    # the reference's compiled comparison checks the right operand against `prev`, which a
    # var operand overwrites: null == 0 only holds when the 0 is a literal
    assert apply({"==": [{"var": "a"}, 0]}, {}) is True
    assert apply({"==": [{"var": "a"}, {"var": "b"}]}, {"b": 0}) is False


@pytest.mark.parametrize(
    ("logic", "message"),
    [
        ({"nope": [1]}, "unknown operator 'nope'"),
        ({"a": 1, "b": 2}, "exactly one key"),
        ({"==": [1]}, "at least 2"),
        ({"in": ["a"]}, "in takes 2 arguments"),
        ({"/": [{"var": "x"}, 0]}, "division by zero"),
        ({"/": [1, 0]}, "division by zero"),
        ({"+": [{"var": "x"}, "abc"]}, "is not a number"),
        ({"+": [{"var": "x"}, [1]]}, "is not a number"),
        ({"max": []}, "at least 1"),
        ({"max": [1, "2"]}, "constant expression fails"),
        ({"map": [[1]]}, "map takes 2 arguments"),
        ({"reduce": [[1], {"var": ""}, 0, 1]}, "reduce takes 2 or 3 arguments"),
        ({"var": [1, 2, 3]}, "var takes 1 or 2 arguments"),
        ({"if": {"var": "x"}}, "if takes an array"),
        ({"missing_some": [1]}, "missing_some takes 2 arguments"),
    ],
)
def test_compile_problems(logic: Any, message: str) -> None:
    _, cc = compile_logic(logic, "t")
    assert cc.problems, logic
    assert any(message in p.message for p in cc.problems), cc.problems
    assert all(p.path.startswith("t") for p in cc.problems)


def test_problem_paths_point_into_the_rule() -> None:
    _, cc = compile_logic({"if": [{"==": [1]}, "a", {"and": [{"var": "x"}, {"bad": 1}]}]}, "flags.f.targeting")
    paths = sorted(p.path for p in cc.problems)
    assert paths == ["flags.f.targeting.if[0].==", "flags.f.targeting.if[2].and[1]"]


def test_constants_are_folded_at_compile_time() -> None:
    compiled, cc = compile_logic({"if": [{"<": [1, 2]}, {"cat": ["a", "b"]}, "c"]})
    assert not cc.problems
    assert compiled.__class__.__name__ == "Const" and compiled.value == "ab"  # type: ignore[union-attr]


def test_depth_limit() -> None:
    logic: Any = {"var": "x"}
    for _ in range(70):
        logic = {"!": [logic]}
    _, cc = compile_logic(logic)
    assert any("deeper than 64" in p.message for p in cc.problems)


def test_size_limit() -> None:
    _, cc = compile_logic({"or": [{"==": [{"var": "x"}, i]} for i in range(40_000)]})
    assert any("too large" in p.message for p in cc.problems)


def test_a_list_of_plain_values_is_one_constant_and_counts_every_element() -> None:
    emails = [f"user{i}@example.com" for i in range(1000)]
    fn, cc = compile_logic({"in": [{"var": "email"}, emails]})
    assert not cc.problems and fn({"email": "user999@example.com"}) is True
    assert fn({"email": "nobody@example.com"}) is False
    assert cc.nodes >= 1000  # the size limit still sees each element...
    _, cc = compile_logic({"in": [{"var": "x"}, list(range(100_001))]})
    assert any("too large" in p.message for p in cc.problems)  # ...and still holds
    # Not plain: an element that reads the request stays a per-request list.
    fn, _ = compile_logic({"in": [{"var": "x"}, ["a", {"var": "y"}]]})
    assert fn({"x": "b", "y": "b"}) is True and fn({"x": "b", "y": "c"}) is False


def test_literal_zero_modulus_fails_at_run_time_not_load() -> None:
    # json-logic-engine checks only `/` divisors while compiling
    compiled, cc = compile_logic({"%": [{"var": "x"}, 0]})
    assert not cc.problems
    with pytest.raises(JSThrow):
        compiled({"x": 5})  # type: ignore[operator]


def test_unsafe_integers_compare_as_doubles() -> None:
    big = 9007199254740993  # 2^53 + 1: JS reads it as 2^53
    assert apply({"==": [{"var": "n"}, 9007199254740992]}, {"n": big}) is True
    assert apply({"!=": [{"var": "n"}, {"*": [{"var": "n"}, 1]}]}, {"n": big}) is False
    assert apply({"in": [{"var": "n"}, [9007199254740992]]}, {"n": big}) is True


def test_missing_some_with_a_var_minimum_answers_like_the_reference() -> None:
    # compiled JS: `3 - (prev = missing).length < NEED ? prev : []`, and NEED's var assigns prev
    logic = {"if": [True, {"missing_some": [{"var": "need"}, ["a", "b", "c"]]}, "x"]}
    assert apply(logic, {"need": 2, "a": 1}) == 2
    assert apply(logic, {"need": 1, "a": 1}) == []


def test_runtime_errors_raise_jsthrow() -> None:
    compiled, cc = compile_logic({"/": [10, {"var": "d"}]})
    assert not cc.problems
    with pytest.raises(JSThrow):
        compiled({"d": 0})  # type: ignore[operator]
    assert compiled({"d": 4}) == 2.5  # type: ignore[operator]


# Below an `if` with fewer than three arguments the reference runs its interpreter, whose
# var, comparisons and unary operators differ from its compiled code (also from node).
DI: dict[str, Any] = {"x": 1, "s": "abc", "n": None, "z": 0, "e": "", "arr": [1, 2, 3], "obj": {"a": {"b": 2}, "z": 0},
                      "t": True, "num": "42", "emp": [], "a0": [0]}
INTERPRETED = [
    ({'var': ['n', 'dflt']}, None),
    ({'var': 'obj.z.q'}, 0),
    ({'var': 'obj.a.b'}, 2),
    ({'var': 'obj.nope.b'}, None),
    ({'var': 0}, DI),
    ({'var': [0]}, DI),
    ({'var': 'z.q'}, 0),
    ({'==': [{'var': 'n'}, {'var': 'z'}]}, True),
    ({'==': [{'var': 'nope'}, {'*': [{'var': 'nope2'}]}]}, True),
    ({'<': [{'var': 'n'}, {'var': 'x'}, 2]}, True),
    ({'!': [{'var': 'a0'}]}, True),
    ({'!!': {'var': 'a0'}}, False),
    ({'cat': [{'var': 'arr'}]}, '123'),
    ({'cat': ['a', {'var': 'n'}, 'b']}, 'ab'),
    ({'+': [{'var': 'arr'}]}, 6),
    ({'-': [{'var': 'num'}]}, -42),
    ({'all': [{'var': 'n'}, True]}, False),
    ({'some': [{'var': 's'}, {'==': [{'var': ''}, 'b']}]}, True),
    ({'all': [{'var': 'obj'}, False]}, True),
    ({'filter': [{'var': 's'}, True]}, 'abc'),
    ({'reduce': [{'var': 'arr'}, {'+': [{'var': 'accumulator'}, {'var': 'current'}]}]}, 6),
    ({'reduce': [{'var': 'emp'}, {'+': [{'var': 'accumulator'}, {'var': 'current'}]}]}, 0),
]
INTERPRETED_ERR = [
    {'/': [{'var': 'x'}, '0']},
    {'/': [{'var': 'neg'}, '0']},
]


@pytest.mark.parametrize(("logic", "expected"), INTERPRETED, ids=[repr(c[0])[:60] for c in INTERPRETED])
def test_interpreted_below_short_if_matches_reference(logic: Any, expected: Any) -> None:
    assert same(apply({"if": [True, logic]}, DI), expected)


@pytest.mark.parametrize("logic", INTERPRETED_ERR, ids=[repr(c)[:60] for c in INTERPRETED_ERR])
def test_interpreted_errors(logic: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017
        apply({"if": [True, logic]}, DI)


def test_compiled_and_interpreted_differ_like_the_reference() -> None:
    data = {"n": None, "z": 0}
    assert apply({"if": [{"==": [{"var": "n"}, {"var": "z"}]}, "y", "n"]}, data) == "n"  # compiled: null == 0 is false
    assert apply({"if": [{"==": [{"var": "n"}, {"var": "z"}]}, "y"]}, data) == "y"  # interpreted: +null == +0


# Subtrees that read nothing from the request are evaluated by the reference once, while it
# compiles, with its interpreter and on empty data (results checked against it).
FOLDED = [
    ({"reduce": [[], {"var": "current"}, {"var": "n"}]}, {"n": 5}, None),  # initial value read from {}
    ({"!!": [{"merge": [False, {"!!": [[]]}]}]}, {}, False),  # interpreter: !! of an array tests [0]
    ({"+": [{"merge": []}]}, {}, 0),  # interpreter: + of an array sums it
    ({"cat": ["a", None]}, {}, "a"),  # interpreter skips nulls
    ({"missing": ["o", ""]}, {"o": 1}, [""]),  # 1-2 dotless keys: direct lookup
]


@pytest.mark.parametrize(("logic", "data", "expected"), FOLDED, ids=[repr(c[0])[:60] for c in FOLDED])
def test_folded_like_the_reference(logic: Any, data: Any, expected: Any) -> None:
    assert same(apply(logic, data), expected)


def test_iteration_over_a_string_throws_unless_interpreted() -> None:
    with pytest.raises(Exception):  # noqa: B017 - compiled: ("a" || []).some is not a function
        apply({"some": ["a", {"missing": ["y"]}]}, {})
    assert apply({"if": [True, {"some": [{"var": "s"}, {"==": [{"var": ""}, "b"]}]}]}, {"s": "abc"}) is True


def test_constant_failures_follow_the_reference_timing() -> None:
    # checked against json-logic-engine: compiled code fails at load, interpreted code when
    # (and only if) the interpreter prepares the argument holding the failing constant
    _, cc = compile_logic({"if": [{"var": "x"}, "a", {"max": [None]}]})
    assert cc.problems  # compiled 3-argument if: load-time problem
    short = {"if": [{"var": "x"}, {"max": [None]}]}
    assert apply(short, {"x": False}) is None
    with pytest.raises(JSThrow):
        apply(short, {"x": True})
    with pytest.raises(JSThrow):  # an interpreted 3-argument if prepares both branches
        apply({"if": [{"var": "x"}, {"if": [True, "a", {"max": [None]}]}]}, {"x": True})
    assert apply({"if": [{"var": "x"}, {"some": [[], {"max": [None]}]}]}, {"x": True}) is False


def test_evaluators_are_checked_leniently_on_their_own() -> None:
    evaluators = {"bad": {"<=": [{"/": [{"var": "n"}, "0"]}, 1]}}
    assert validate_evaluators(evaluators) == []  # fine where the reference interprets it
    flag = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    used_interpreted = {**flag, "targeting": {"if": [{"$ref": "bad"}, "on"]}}
    used_compiled = {**flag, "targeting": {"if": [{"$ref": "bad"}, "on", "off"]}}
    assert validate_document({"$evaluators": evaluators, "flags": {"f": used_interpreted}}) == []
    problems = validate_document({"$evaluators": evaluators, "flags": {"f": used_compiled}})
    assert [(p.path, p.message) for p in problems] == [("$evaluators.bad.<=[0]./[1]", "division by zero")]
