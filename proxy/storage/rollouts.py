"""Progressive rollouts in Redis (DESIGN §10): ``flagedge:{ENV}:rollouts`` HASH flag -> the
rollout's JSON (built and read by ``release/rollout.py``), and the script that writes a
flag's rule and its rollout record together.

A rollout record only ever changes with its flag's rule (start, pause, abort, cleanup), so
both go through one script in the ``{ENV}`` slot: ROLLOUT_WRITE_LUA runs the guarded write
of every CLI change (``requests.GUARDED_WRITER``: the policy check, then ``WRITE_BODY``) and
stores the record in the same script, all or nothing. It is a compare-and-set on the record:
the caller passes the record it read ('' = none), and the script refuses with ``moved`` when
the stored one differs. That is the fence of the release workers' cleanup (three serves see
a rollout past its last boundary; the first one's write changes the record, the others get
``moved`` and write nothing) and of a pause racing an abort.
A rollout started by a change request is stored by the apply script instead (its
``n_rollouts`` part, see ``requests.APPLY_LUA``).
"""

from __future__ import annotations

from typing import Any

from proxy.storage import layout
from proxy.storage.requests import GUARDED_WRITER, guarded_keys

# KEYS: flags, meta, changes, outbox, policy, rollouts.
# ARGV: flag, its stored rollout JSON as read ('' = none), the new rollout JSON without its
# closing '}' (the script appends ',"version":N}': the version the rule is written as), then
# GUARDED_WRITE_LUA's ARGV. Returns {'moved'} | GUARDED_WRITE_LUA's reply; the record is
# stored only with a written change ('ok').
ROLLOUT_WRITE_LUA = GUARDED_WRITER + """
local kind = redis.call('TYPE', KEYS[6])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('flagedge write refused, nothing written: ' .. KEYS[6] .. ' is a ' .. kind)
end
if (redis.call('HGET', KEYS[6], ARGV[1]) or '') ~= ARGV[2] then return {'moved'} end
local rest = {}
for i = 4, #ARGV do rest[#rest + 1] = ARGV[i] end
local res = guarded_write({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, rest)
if res.err then return res end
if res[1] == 'ok' then
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[3] .. ',"version":' .. res[2] .. '}')
end
return res
"""


def rollout_write_keys(env: str) -> list[str]:
    return [*guarded_keys(env), layout.rollouts_key(env)]


def call_write(client: Any, env: str, flag: str, read: bytes | None, head: bytes,
               guarded_args: list[Any]) -> list[Any]:
    """Run ROLLOUT_WRITE_LUA; ``guarded_args`` are GUARDED_WRITE_LUA's ARGV."""
    return list(client.eval(ROLLOUT_WRITE_LUA, 6, *rollout_write_keys(layout.check_env(env)),
                            flag, read or b"", head, *guarded_args))


def read(client: Any, env: str, flag: str) -> bytes | None:
    raw = client.hget(layout.rollouts_key(layout.check_env(env)), flag)
    return bytes(raw) if raw is not None else None


def read_all(client: Any, env: str) -> dict[str, bytes]:
    raw = client.hgetall(layout.rollouts_key(layout.check_env(env)))
    return {(k.decode() if isinstance(k, bytes) else str(k)): bytes(v) for k, v in raw.items()}
