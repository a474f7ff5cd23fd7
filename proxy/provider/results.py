"""Engine results -> OpenFeature resolution details, for the in-process provider.

Type checks follow the flag's variant type (known even when a DISABLED flag has no value);
numbers serve integer and float requests; no value means the caller's default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.flag_evaluation import Reason as OFReason

from proxy.model import EvaluationResult, VariantType


@dataclass(frozen=True, slots=True)
class Expected:
    """What a ``resolve_<type>_details`` call accepts: flag variant types and a value
    converter (None: the value is not of this type)."""

    name: str
    variant_types: frozenset[VariantType]
    convert: Callable[[Any], Any | None]


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():  # JSON 3.0 is the integer 3
        return int(v)
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)  # the SDK type-checks floats with isinstance(v, float)
    return None


BOOLEAN = Expected("boolean", frozenset({VariantType.BOOLEAN}),
                   lambda v: v if isinstance(v, bool) else None)
STRING = Expected("string", frozenset({VariantType.STRING}),
                  lambda v: v if isinstance(v, str) else None)
INTEGER = Expected("integer", frozenset({VariantType.NUMBER}), _as_int)
FLOAT = Expected("float", frozenset({VariantType.NUMBER}), _as_float)
OBJECT = Expected("object", frozenset({VariantType.OBJECT}),
                  lambda v: v if isinstance(v, dict | list) else None)


def error(default: Any, code: OFErrorCode, message: str,
          metadata: Mapping[str, Any] | None = None) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(value=default, error_code=code, error_message=message,
                                 reason=OFReason.ERROR, flag_metadata=dict(metadata or {}))


def to_resolution(result: EvaluationResult, default: Any,
                  expected: Expected) -> FlagResolutionDetails[Any]:
    """Engine result -> OpenFeature resolution. No value (DISABLED, no default variant) means
    the caller's default, with the engine's reason and a null variant."""
    if result.error_code is not None:
        return error(default, OFErrorCode(result.error_code.value),
                     result.error_details or result.error_code.value, result.metadata)
    metadata = dict(result.metadata)
    if not result.has_value:
        return FlagResolutionDetails(value=default, reason=OFReason(result.reason.value),
                                     variant=None, flag_metadata=metadata)
    value = expected.convert(result.value)
    if value is None:
        return error(default, OFErrorCode.TYPE_MISMATCH,
                     f"flag {result.key!r} value is not a {expected.name}", metadata)
    return FlagResolutionDetails(value=value, reason=OFReason(result.reason.value),
                                 variant=result.variant, flag_metadata=metadata)


def to_context(ctx: EvaluationContext | None) -> dict[str, Any]:
    """OpenFeature context -> the JSON-like context the engine sees (as OFREP would send it:
    attributes plus ``targetingKey``; datetimes as ISO 8601 strings)."""
    if ctx is None:
        return {}
    out = {k: _jsonable(v) for k, v in ctx.attributes.items()}
    if ctx.targeting_key:
        out["targetingKey"] = ctx.targeting_key
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v
