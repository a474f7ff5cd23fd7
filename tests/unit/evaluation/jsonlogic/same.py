"""Comparing a rule's result with the reference's: as JSON values, with JS numbers."""

from __future__ import annotations

from typing import Any


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, with JS numbers: 3 and 3.0 are one number, bools are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b
