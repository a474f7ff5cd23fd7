"""Run the v3 reference, ``openfeature-flagd-core`` 2.x (the engine of the Python flagd
provider 0.6.x), from Python, recording every ``fractional`` call it makes.

It is a Python package with no conflict with flagedge's own dependencies (``pyproject.toml``
pins it in the ``test`` and ``bench`` extras), so it runs in this process. Its JsonLogic engine
is ``panzi-json-logic``, not flagd-core 4.0.1's json-logic-engine, so whole-flag answers also
differ where the two JsonLogic engines do (that is v2's conformance, against the JS reference):
:func:`evaluate` can swap the reference's ``fractional`` for a v2 one (:func:`fractional_v2`)
to tell those cases apart from hashing (tests/conformance/test_v3.py).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.targeting import custom_ops
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from proxy.evaluation.jsonlogic.bucketing import pick, runtime_buckets
from tests.conformance.compare import _MISSING, Outcome

# the module (its package exports a function of the same name)
targeting_module = importlib.import_module("openfeature.contrib.tools.flagd.core.targeting.targeting")
JSON = Any
RESOLVERS = {"boolean": "resolve_boolean_value", "string": "resolve_string_value",
             "number": "resolve_float_value", "object": "resolve_object_value"}
DEFAULTS: dict[str, Any] = {"boolean": False, "string": "<default>", "number": -1.5,
                            "object": {"<default>": True}}

# The reference logs every null it answers at ERROR ("No hashKey value resolved"): thousands.
logging.getLogger("openfeature.contrib").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Call:
    """One ``fractional(data, *args)`` the reference made: what it saw and answered."""

    targeting_key: Any
    flagd: Any
    args: tuple[Any, ...]
    result: Any


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)

    def wrap(self, op: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(data: Any, *args: Any) -> Any:
            result = op(data, *args)
            if isinstance(data, dict):  # inside an iterator the data may be anything
                flagd = data.get("$flagd")
                self.calls.append(Call(data.get("targetingKey"),
                                       orjson.loads(orjson.dumps(flagd)), orjson.loads(
                                           orjson.dumps(list(args))), result))
            return result

        return recorded


def fractional_v2(data: Any, *args: Any) -> Any:
    """flagedge's v2 hashing on the reference's evaluated arguments: the reference's JsonLogic
    with v2 buckets (``flagKey + targetingKey``, or the bucketBy string, as UTF-8)."""
    if not args:
        return None
    first, rest = args[0], list(args[1:])
    if isinstance(first, list):
        first, rest = None, list(args)
    tk = data.get("targetingKey")
    if isinstance(first, str):
        value = first
    elif isinstance(tk, str) and tk:
        value = str(data.get("$flagd", {}).get("flagKey", "undefined")) + tk
    else:
        return None
    table = runtime_buckets(rest)
    if table is None or table[2] == 0:
        return None
    return pick(value, *table)


def fractional_js_numbers(data: Any, *args: Any) -> Any:
    """The reference's v3 ``fractional`` with integral float weights taken as integers: what it
    answers where its JsonLogic's arithmetic made a Python float (``"12" * 2`` is 24.0 in
    panzi-json-logic) that JavaScript's one number type, and flagedge, see as the integer 24."""
    def js(bucket: Any) -> Any:
        if (isinstance(bucket, list) and len(bucket) == 2 and isinstance(bucket[1], float)
                and bucket[1].is_integer()):
            return [bucket[0], int(bucket[1])]
        return bucket

    return custom_ops.fractional(data, *[js(a) for a in args])


@contextlib.contextmanager
def operator(op: Callable[..., Any]) -> Iterator[None]:
    """The reference with ``op`` as its ``fractional`` for the duration."""
    table = targeting_module.OPERATORS
    before = table["fractional"]
    table["fractional"] = op
    try:
        yield
    finally:
        table["fractional"] = before


class Reference:
    """One document loaded into the reference."""

    def __init__(self, doc: Mapping[str, JSON]):
        self.core = FlagdCore()
        self.load_error: str | None = None
        try:  # it mutates what it is given
            self.core.set_flags(orjson.loads(orjson.dumps(doc)))
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"

    def evaluate(self, key: str, kind: str, context: Mapping[str, JSON]) -> Outcome:
        if self.load_error is not None:
            return Outcome("ERROR", error_code="PARSE_ERROR", note=self.load_error)
        ctx = orjson.loads(orjson.dumps(context))
        tk = ctx.pop("targetingKey", None)
        resolve = getattr(self.core, RESOLVERS.get(kind, "resolve_object_value"))
        try:
            details = resolve(key, DEFAULTS.get(kind), EvaluationContext(tk, ctx))
        except OpenFeatureError as exc:
            return Outcome("ERROR", error_code=str(exc.error_code.value), note=str(exc))
        except Exception as exc:  # its JsonLogic raising: the provider's GENERAL
            return Outcome("ERROR", error_code="GENERAL", note=f"{type(exc).__name__}: {exc}")
        reason = str(getattr(details.reason, "value", details.reason))
        value = _MISSING if details.variant is None else details.value
        return Outcome(reason, details.variant, value, None, dict(details.flag_metadata or {}))


def v3_operator(recorder: Recorder | None = None) -> Callable[..., Any]:
    op = custom_ops.fractional
    return op if recorder is None else recorder.wrap(op)
