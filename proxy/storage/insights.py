"""Redis keys of insights (DESIGN §11), all in the environment's ``{ENV}`` slot.

- ``flagedge:{ENV}:x:{YYYYMMDDHHMM}`` HASH exposure field -> count, for that UTC minute;
  kept ``MINUTE_KEYS_S`` (two days: per-minute detail for recent windows).
- ``flagedge:{ENV}:xd:{YYYYMMDD}`` HASH the same fields per UTC day, kept ``insights_days``
  (DESIGN names only the minute keys, kept ``insights_days``; 30 days of minutes is 43,200
  hashes per environment, so longer windows read days: docs/design-notes.md).
- ``flagedge:{ENV}:users:{YYYYMMDD}`` HyperLogLog of the targetingKeys seen that UTC day.
- ``flagedge:{ENV}:seen`` HASH flag -> Unix seconds it was last evaluated.
- ``flagedge:{ENV}:born`` HASH flag -> Unix seconds it was first seen served (HSETNX by
  flushes: a flag created within a window is not stale for being unused in it).
- ``flagedge:{ENV}:consumers`` / ``:reporters`` HASH key id -> Unix seconds it last consumed
  rules to evaluate in-process / last reported exposures: usage is complete when every
  consumer of a window also reported in it.

An exposure field is the JSON array ``[flag, variant, reason]`` (flag keys may hold any
character, so no separator is safe); ``variant`` is "" for an error or a disabled flag.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson

from proxy.storage.layout import PREFIX

MINUTE_KEYS_S = 2 * 86_400


def _tag(env: str) -> str:
    return f"{PREFIX}:{{{env}}}"


def minute_key(env: str, minute: str) -> str:
    return f"{_tag(env)}:x:{minute}"


def day_key(env: str, day: str) -> str:
    return f"{_tag(env)}:xd:{day}"


def users_key(env: str, day: str) -> str:
    return f"{_tag(env)}:users:{day}"


def seen_key(env: str) -> str:
    return f"{_tag(env)}:seen"


def born_key(env: str) -> str:
    return f"{_tag(env)}:born"


def consumers_key(env: str) -> str:
    return f"{_tag(env)}:consumers"


def reporters_key(env: str) -> str:
    return f"{_tag(env)}:reporters"


def minute_of(t: float) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(t))


def day_of(t: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(t))


def minutes_between(start: float, end: float) -> Iterator[str]:
    """Every UTC minute from ``start``'s to ``end``'s, both included."""
    t = start - start % 60
    while t <= end:
        yield minute_of(t)
        t += 60


def days_between(start: float, end: float) -> Iterator[str]:
    t = start - start % 86_400
    while t <= end:
        yield day_of(t)
        t += 86_400


def field(flag: str, variant: str, reason: str) -> bytes:
    return orjson.dumps([flag, variant, reason])


def parse_field(raw: bytes | str) -> tuple[str, str, str] | None:
    """The (flag, variant, reason) of a field, or None for one this code did not write."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, str) for v in value)):
        return value[0], value[1], value[2]
    return None
