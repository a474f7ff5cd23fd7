"""starts_with / ends_with: [string, affix]; anything but two strings gives null."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.evaluation.jsonlogic.compiler import apply, compile_logic


@pytest.mark.parametrize(
    ("op", "value", "affix", "expected"),
    [
        ("starts_with", "admin@example.com", "admin", True),
        ("starts_with", "user@example.com", "admin", False),
        ("ends_with", "user@example.com", "@example.com", True),
        ("ends_with", "user@example.org", "@example.com", False),
        ("starts_with", "abc", "", True),
        ("starts_with", 123, "1", None),
        ("ends_with", None, "x", None),
        ("ends_with", ["x"], "x", None),
    ],
)
def test_literal_affix(op: str, value: Any, affix: str, expected: Any) -> None:
    assert apply({op: [{"var": "v"}, affix]}, {"v": value}) is expected


@pytest.mark.parametrize("op", ["starts_with", "ends_with"])
def test_computed_affix_and_bad_types(op: str) -> None:
    assert apply({op: [{"var": "v"}, {"var": "a"}]}, {"v": "abc", "a": "abc"}) is True
    assert apply({op: [{"var": "v"}, {"var": "a"}]}, {"v": "abc", "a": 1}) is None
    assert apply({op: [{"var": "v"}, {"var": "a"}]}, {"v": "abc"}) is None


@pytest.mark.parametrize("args", [["a"], ["a", "b", "c"], []])
def test_wrong_arity_is_a_problem(args: list[Any]) -> None:
    _, cc = compile_logic({"starts_with": args}, "t")
    assert any("starts_with takes 2 arguments" in p.message for p in cc.problems)


def test_constant_arguments() -> None:
    # like every flagd operator, not folded at load (the reference never folds them)
    compiled, cc = compile_logic({"ends_with": ["file.json", ".json"]})
    assert not cc.problems and callable(compiled) and compiled({}) is True
