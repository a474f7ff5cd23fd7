"""Redis replies as Python values. redis-py hands back ``bytes`` (``decode_responses`` is off,
so flag JSON is parsed straight from the reply without a str copy); names, versions and
epochs are wanted as ``str``."""

from __future__ import annotations


def text(value: bytes | str | int | float) -> str:
    """A reply field as text: bytes are UTF-8, anything else its ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
