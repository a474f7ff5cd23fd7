"""sem_ver: node-semver parsing as flagd's JS evaluator does it (checked against it), flagd's
^ (major) and ~ (major.minor), null on bad input, literal target validated at load."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.evaluation.jsonlogic import semver
from proxy.evaluation.jsonlogic.compiler import apply, compile_logic
from proxy.evaluation.jsonlogic.semver import compare, parse_version


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1.2.3", (1, 2, 3, None)),
        ("v1.2.3", (1, 2, 3, None)),
        ("V1.2.3", (1, 2, 3, None)),
        (" 1.2.3 ", (1, 2, 3, None)),
        ("1.2", (1, 2, 0, None)),
        ("2", (2, 0, 0, None)),
        ("v1", (1, 0, 0, None)),
        ("1.2.3-beta.1", (1, 2, 3, "beta.1")),
        ("1.2.3+build.5", (1, 2, 3, None)),
        ("1.2.3-rc.1+b", (1, 2, 3, "rc.1")),
        ("1.2.3.4", None),
        ("01.2", None),
        ("1.02.0", None),
        ("1.2.3-01", None),
        ("abc", None),
        ("", None),
        ("1.2.", None),
        ("1.2.3-", None),
        ("9999999999999999.0.0", None),
    ],
)
def test_parse(text: str, parsed: Any) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("1.2.3", "1.2.3", 0),
        ("1.2.3", "1.2.4", -1),
        ("1.10.0", "1.9.9", 1),
        ("1.2.3-alpha", "1.2.3", -1),
        ("1.2.3-alpha", "1.2.3-alpha.1", -1),
        ("1.2.3-alpha.1", "1.2.3-alpha.beta", -1),
        ("1.2.3-2", "1.2.3-10", -1),
        ("1.2.3+a", "1.2.3+b", 0),
    ],
)
def test_precedence(a: str, b: str, sign: int) -> None:
    pa, pb = parse_version(a), parse_version(b)
    assert pa is not None and pb is not None
    assert compare(pa, pb) == sign
    assert compare(pb, pa) == -sign


@pytest.mark.parametrize(
    ("version", "op", "target", "expected"),
    [
        ("1.2.3", "=", "1.2.3", True),
        ("v1.2.3", "=", "1.2.3", True),
        ("1.2", "=", "1.2.0", True),
        ("2", ">=", "1.9.9", True),
        ("1.2.3", "!=", "1.2.4", True),
        ("1.2.3", "<", "1.2.4", True),
        ("1.2.3", "<=", "1.2.3", True),
        ("1.2.3", ">", "1.2.3", False),
        ("1.9.0", "^", "1.2.3", True),
        ("2.0.0", "^", "1.2.3", False),
        ("1.2.9", "~", "1.2.0", True),
        ("1.3.0", "~", "1.2.0", False),
        ("1.2.3-beta", "<", "1.2.3", True),
        (1.5, "=", "1.5.0", True),
        (2, "=", "2.0.0", True),
        ("not-a-version", "=", "1.0.0", None),
        (None, "=", "1.0.0", None),
        (True, "=", "1.0.0", None),
        ("1.2.3.4", ">", "1.0.0", None),
    ],
)
def test_operator(version: Any, op: str, target: str, expected: Any) -> None:
    assert apply({"sem_ver": [{"var": "v"}, op, target]}, {"v": version}) is expected


def test_dynamic_operator_and_target() -> None:
    logic = {"sem_ver": [{"var": "v"}, {"var": "op"}, {"var": "t"}]}
    assert apply(logic, {"v": "1.2.3", "op": ">", "t": "1.0"}) is True
    assert apply(logic, {"v": "1.2.3", "op": "=>", "t": "1.0"}) is None
    assert apply(logic, {"v": "1.2.3", "op": ">", "t": "x"}) is None


@pytest.mark.parametrize(
    ("logic", "message"),
    [
        ({"sem_ver": [{"var": "v"}, ">=", "1.x"]}, "invalid semantic version"),
        ({"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}, "unknown sem_ver operator"),
        ({"sem_ver": [{"var": "v"}, "="]}, "sem_ver takes [version, operator, target]"),
    ],
)
def test_literal_arguments_are_validated(logic: Any, message: str) -> None:
    _, cc = compile_logic(logic, "t")
    assert any(message in p.message for p in cc.problems), cc.problems


def test_context_versions_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    semver.clear_cache()
    logic = {"sem_ver": [{"var": "v"}, ">=", "1.0.0"]}
    compiled, _ = compile_logic(logic)
    parsed: list[str] = []
    real = semver._parse
    monkeypatch.setattr(semver, "_parse", lambda raw: parsed.append(raw) or real(raw))
    for _ in range(5):
        assert compiled({"v": "3.1.4"}) is True  # type: ignore[operator]
    assert parsed == ["3.1.4"]  # parsed once, then answered from the cache
    assert semver.is_cached("3.1.4")


def test_the_cache_is_bounded_and_emptied_when_full() -> None:
    semver.clear_cache()
    for i in range(semver.CACHED_VERSIONS):
        assert semver.parse_version(f"1.{i}.0") == (1, i, 0, None)
    assert semver.cached_count() == semver.CACHED_VERSIONS
    assert semver.parse_version("2.0.0") == (2, 0, 0, None)  # one more: the cache starts over
    assert semver.cached_count() == 1 and semver.is_cached("2.0.0")
    assert semver.parse_version("1.7.0") == (1, 7, 0, None)  # still parsed right


def test_long_context_strings_are_parsed_but_never_cached() -> None:
    """An adversary's 60 KB "versions" would otherwise hold 4,096 x 60 KB in the cache."""
    compiled, _ = compile_logic({"sem_ver": [{"var": "v"}, ">=", "1.0.0"]})
    semver.clear_cache()  # the literal target was parsed once, at compile time
    cap = semver.MAX_CACHED_VERSION
    long_ok = "2.0.0-" + "a" * (cap * 2)  # a valid prerelease, just long
    for i in range(semver.CACHED_VERSIONS + 10):
        assert compiled({"v": f"{i}" + "7" * 60_000}) is None  # type: ignore[operator]
        assert parse_version(f"v{i}" + "7" * 60_000) is None  # the generic path
        assert compiled({"v": long_ok}) is True  # type: ignore[operator]
    assert parse_version(long_ok) == (2, 0, 0, "a" * (cap * 2))
    assert semver.cached_count() == 0
    assert semver.cached_bytes() == 0
    for i in range(10):
        assert compiled({"v": f"1.{i}.0"}) is True  # type: ignore[operator]
    assert semver.cached_count() == 10  # short ones are still cached
    assert semver.cached_bytes() == 10 * (2 * cap + semver.SEMVER_ENTRY_BYTES)


@pytest.mark.parametrize("text", ["0.0.0", "4.2.13", "10.20.30", "999999999999999.0.1",
                                  "1.999999999999999.2", "3.0.999999999999999"])
def test_the_plain_form_parses_as_the_general_path_does(text: str) -> None:
    """"X.Y.Z" has a fast path; with a leading space the same version can only take the
    general one (whitespace is trimmed there): both must give the same answer."""
    assert semver._parse(text) == semver._parse(f" {text}") == tuple(
        [int(p) for p in text.split(".")] + [None])


@pytest.mark.parametrize("text", ["01.2.3", "1.2.03", "\u0661.2.3", "+1.2.3",
                                  "1_0.2.3", "9007199254740992.0.0"])
def test_near_plain_strings_are_refused_as_before(text: str) -> None:
    assert semver._parse(text) is None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="0123456789٣", max_size=17), min_size=1, max_size=4))
def test_the_plain_path_agrees_with_the_general_one_on_any_digits_and_dots(parts: list[str]) -> None:
    """A leading "v" skips the plain path, so the general one parses the same digits alone."""
    text = ".".join(parts)
    assert semver._parse(text) == semver._parse("v" + text)


def test_sixteen_digits_still_reach_the_safe_integer_check() -> None:
    assert semver._parse("9007199254740991.0.0") == (9007199254740991, 0, 0, None)


VERSIONS = ["1.2.3", "1.2.4", "1.3.0", "2.0.0", "1.2.3-alpha", "1.2.3-beta.2", "1.2.4-rc.1",
            "v1.2.3", "1.2", "1.2.3+build"]


@pytest.mark.parametrize("op", semver.OPERATORS)
@pytest.mark.parametrize("target", ["1.2.3", "1.2.3-beta.1", "1.2"])
def test_the_compiled_comparison_matches_the_generic_one(op: str, target: str) -> None:
    """The compiled rule (literal operator and target) compares plain versions as tuples;
    sem_ver() on evaluated arguments always goes through compare(). They must agree."""
    compiled, _ = compile_logic({"sem_ver": [{"var": "v"}, op, target]})
    for version in VERSIONS:
        expected = semver.sem_ver([version, op, target])
        assert expected is not None
        assert compiled({"v": version}) is expected, (version, op, target)  # type: ignore[operator]
