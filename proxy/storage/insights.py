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

Experiments (one set of keys per flag revision, ``{rev}`` = ``Flag.experiment``):

- ``flagedge:{ENV}:exp:{flag}:{rev}`` HASH targetingKey -> variant (HSETNX: the first holds)
- ``...:assigned`` HASH variant -> users assigned (counted when HSETNX set one)
- ``...:users:{event}`` SET of targetingKeys that sent ``event`` (converted users, exact)
- ``...:{converted|count|sum|sumsq}:{event}`` HASH variant -> converted users, events,
  the sum of their values and of their squares

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


def experiment_key(env: str, flag: str, revision: str) -> str:
    return f"{_tag(env)}:exp:{flag}:{revision}"


STATS = ("converted", "count", "sum", "sumsq")


def experiment_keys(env: str, flag: str, revision: str, event: str) -> list[str]:
    """KEYS of ``ATTRIBUTE_LUA``: assignments, converted users, then ``STATS``' hashes."""
    base = experiment_key(env, flag, revision)
    return [base, f"{base}:users:{event}", *(f"{base}:{stat}:{event}" for stat in STATS)]


# KEYS: assignments, assigned counts. ARGV: retention seconds, then targetingKey, variant, ...
# The first assignment of a user holds (a rule change starts another revision); counts move
# only when one is set, so they stay exact however often workers and replicas report a user.
ASSIGN_LUA = """
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 0
"""

# KEYS: experiment_keys(...). ARGV: retention seconds, then targetingKey, value ("" for
# none), ... Each event is attributed to the user's stored assignment, never re-evaluated;
# returns the positions (1-based pairs) of users with no assignment yet, to be held.
ATTRIBUTE_LUA = """
local unassigned = {}
for i = 2, #ARGV, 2 do
  local variant = redis.call('HGET', KEYS[1], ARGV[i])
  if not variant then
    table.insert(unassigned, (i - 2) / 2 + 1)
  else
    if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
      redis.call('HINCRBY', KEYS[3], variant, 1)
    end
    redis.call('HINCRBY', KEYS[4], variant, 1)
    local value = tonumber(ARGV[i + 1])
    if value then
      redis.call('HINCRBYFLOAT', KEYS[5], variant, value)
      redis.call('HINCRBYFLOAT', KEYS[6], variant, value * value)
    end
  end
end
for k = 2, #KEYS do redis.call('EXPIRE', KEYS[k], ARGV[1]) end
return unassigned
"""


# KEYS: the minute's hash, the day's hash, seen. ARGV: the minute's TTL, the day's TTL, now
# (Unix seconds), then flag, field, count, ... One command per flush and environment (a
# pipeline of two HINCRBYs per field cost ~20 us each to encode: 500 flags x 3 variants
# held the event loop for tens of milliseconds).
EXPOSURES_LUA = """
for i = 4, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  redis.call('HINCRBY', KEYS[2], ARGV[i + 1], ARGV[i + 2])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 0
"""
