"""JavaScript value semantics (jsvalue.py): truthiness, ToNumber, Number::toString and
String(v) as JavaScript has them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from proxy.evaluation.jsonlogic.compiler import apply
from proxy.evaluation.jsonlogic.jsvalue import number_to_string, str_to_number, to_string, truthy


@pytest.mark.parametrize(
    ("value", "expected"),
    [({}, False), ([], False), ("0", True), ("", False), (0, False), (0.0, False), (math.nan, False),
     (None, False), ({"a": 0}, True), ([0], True), ("false", True), (-1, True)],
)
def test_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected
    assert apply({"!!": [{"var": "v"}]}, {"v": value}) is expected


@pytest.mark.parametrize(
    ("text", "number"),
    [("", 0), (" 12 ", 12), ("0x1A", 26), ("1e3", 1000), (".5", 0.5), ("5.", 5), ("-Infinity", -math.inf),
     ("1_000", math.nan), ("inf", math.nan), ("12px", math.nan), ("0b101", 5)],
)
def test_js_string_to_number(text: str, number: float) -> None:
    got = str_to_number(text)
    assert (math.isnan(got) and math.isnan(number)) or got == number


@pytest.mark.parametrize(
    ("number", "text"),
    [(1.0, "1"), (1.5, "1.5"), (1e21, "1e+21"), (1e-7, "1e-7"), (0.000001, "0.000001"), (-0.0, "0"),
     (123456789012345680000.0, "123456789012345680000"), (2**70, "1.1805916207174113e+21"), (0.1 + 0.2, "0.30000000000000004")],
)
def test_js_number_to_string(number: float, text: str) -> None:
    assert number_to_string(number) == text


def test_to_string_of_values() -> None:
    assert to_string([1, [2, None], True]) == "1,2,,true"
    assert to_string({"a": 1}) == "[object Object]"
    assert to_string(None) == "null"
