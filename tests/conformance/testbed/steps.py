"""The testbed's step texts, run over OFREP the way an OpenFeature SDK's OFREP provider does.

A scenario picks a flag (type, key, code default) and a context, evaluates it with
``POST /ofrep/v1/evaluate/flags/{key}`` and checks value, reason, error code and metadata of
the resulting *details*: on an error answer (400/404) the SDK returns the code default with
reason ERROR and the error code; a value of the wrong type is TYPE_MISMATCH, decided
client-side; a 200 without a value (DISABLED, no default variant) gives the code default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.conformance.testbed.gherkin import Scenario, Step


@dataclass
class Details:
    value: Any
    reason: str
    variant: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """One scenario's state: which server answers, the flag asked for, the context."""

    client_for: Callable[[str], httpx.Client]  # selector ("" = the default file) -> client
    evaluator_suite: bool
    selector: str = ""
    flag_type: str = ""
    key: str = ""
    default: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    details: Details | None = None


def typed(kind: str, text: str) -> Any:
    """A table cell as a value of the step's type (Boolean/Integer/Float/String/Object)."""
    if kind == "Boolean":
        return {"true": True, "false": False}[text]
    if kind == "Integer":
        return int(text)
    if kind == "Float":
        return float(text)
    if kind == "Object":
        return orjson.loads(text.replace('\\"', '"'))
    return text


def _matches_type(kind: str, value: Any) -> bool:
    if kind == "Boolean":
        return value.__class__ is bool
    if kind == "String":
        return value.__class__ is str
    if kind == "Integer":
        return value.__class__ is int or (value.__class__ is float and value.is_integer())
    if kind == "Float":
        return value.__class__ in (int, float)
    return value.__class__ is dict


def evaluate(world: World) -> Details:
    client = world.client_for(world.selector)
    resp = client.post(f"/ofrep/v1/evaluate/flags/{world.key}", json={"context": world.context})
    body = resp.json()
    if resp.status_code in (400, 404):
        return Details(world.default, "ERROR", None, body["errorCode"])
    assert resp.status_code == 200, f"unexpected answer {resp.status_code}: {resp.text}"
    metadata = body.get("metadata") or {}
    if "value" not in body:
        return Details(world.default, body["reason"], body.get("variant"), None, metadata)
    value = body["value"]
    if not _matches_type(world.flag_type, value):
        return Details(world.default, "ERROR", None, "TYPE_MISMATCH", metadata)
    if world.flag_type in ("Integer", "Float"):  # an SDK reads a JSON number as the type asked
        value = int(value) if world.flag_type == "Integer" else float(value)
    return Details(value, body["reason"], body.get("variant"), None, metadata)


# -- steps: (pattern, action) -------------------------------------------------------------
Action = Callable[[World, re.Match[str], Step], None]
STEPS: list[tuple[re.Pattern[str], Action]] = []


def step(pattern: str) -> Callable[[Action], Action]:
    def register(action: Action) -> Action:
        STEPS.append((re.compile(pattern + "$"), action))
        return action

    return register


@step(r"an evaluator|a (stable|metadata) flagd provider")
def _provider(world: World, m: re.Match[str], s: Step) -> None:
    return None


@step(r'an option "cache" of type "CacheType" with value "disabled"')
def _no_cache(world: World, m: re.Match[str], s: Step) -> None:
    return None  # OFREP single evaluations are never cached client-side


@step(r'an option "selector" of type "String" with value "(.*)"')
def _selector(world: World, m: re.Match[str], s: Step) -> None:
    world.selector = m.group(1)


@step(r'an? (\w+)-flag with key "(.*)" and a (?:default|fallback) value "(.*)"')
def _flag(world: World, m: re.Match[str], s: Step) -> None:
    world.flag_type, world.key = m.group(1), m.group(2)
    world.default = typed(world.flag_type, m.group(3))


@step(r'a context containing a key "(.*)", with type "(\w+)" and with value "(.*)"')
def _context_key(world: World, m: re.Match[str], s: Step) -> None:
    world.context[m.group(1)] = typed(m.group(2), m.group(3))


@step(r'a context containing a targeting key with value "(.*)"')
def _targeting_key(world: World, m: re.Match[str], s: Step) -> None:
    world.context["targetingKey"] = m.group(1)


@step(r'a context containing a nested property with outer key "(.*)" and inner key "(.*)", '
      r'with value "(.*)"')
def _nested(world: World, m: re.Match[str], s: Step) -> None:
    world.context.setdefault(m.group(1), {})[m.group(2)] = m.group(3)


@step(r"the flag was evaluated with details")
def _evaluate(world: World, m: re.Match[str], s: Step) -> None:
    world.details = evaluate(world)


def _details(world: World) -> Details:
    assert world.details is not None, "no evaluation before the check"
    return world.details


@step(r'the resolved details value should be "(.*)"')
def _value(world: World, m: re.Match[str], s: Step) -> None:
    expected = typed(world.flag_type, m.group(1))
    got = _details(world)
    assert got.value == expected and got.value.__class__ is expected.__class__, (
        f"value {got.value!r}, expected {expected!r} ({got})")


@step(r'the reason should be "(.*)"')
def _reason(world: World, m: re.Match[str], s: Step) -> None:
    got = _details(world)
    assert got.reason == m.group(1), f"reason {got.reason}, expected {m.group(1)} ({got})"


@step(r'the error-code should be "(.*)"')
def _error_code(world: World, m: re.Match[str], s: Step) -> None:
    got = _details(world)
    assert got.error_code == (m.group(1) or None), (
        f"error code {got.error_code}, expected {m.group(1) or 'none'} ({got})")


@step(r"the resolved metadata should contain")
def _metadata(world: World, m: re.Match[str], s: Step) -> None:
    got = _details(world).metadata
    for key, kind, text in s.table[1:]:
        assert key in got and got[key] == typed(kind, text), (
            f"metadata {key}={got.get(key)!r}, expected {text} ({got})")


@step(r"the resolved metadata is empty")
def _no_metadata(world: World, m: re.Match[str], s: Step) -> None:
    assert _details(world).metadata == {}, _details(world).metadata


def unsupported(scenario: Scenario) -> list[str]:
    """The scenario's steps this runner has no action for."""
    return [s.text for s in scenario.steps if not any(p.match(s.text) for p, _ in STEPS)]


def run(scenario: Scenario, world: World) -> Details:
    for s in scenario.steps:
        for pattern, action in STEPS:
            m = pattern.match(s.text)
            if m:
                action(world, m, s)
                break
        else:
            raise AssertionError(f"no step matches {s.text!r}")
    return _details(world)
