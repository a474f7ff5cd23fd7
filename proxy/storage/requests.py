"""Change requests in Redis (DESIGN §10): key names and the Lua scripts that create them,
move them between states, and apply them, each in the environment's ``{ENV}`` slot.

- ``flagedge:{ENV}:requests`` HASH id -> the request's JSON object (``release/requests.py``
  builds and reads it); ids from ``INCR flagedge:{ENV}:request_seq``.
- A request's content never changes; its state, approvals and preview do, and only through
  these scripts, each a compare-and-set on the stored JSON: the caller passes the JSON it
  read and the JSON (or the JSON's head) to store instead, and the script refuses with
  ``moved`` when the stored one is no longer what the caller read. Lua never rebuilds the
  JSON (its cjson would turn ``1.0`` into ``1`` and ``[]`` into ``{}`` inside flag rules);
  it reads it only for plain fields (state, author, approvals, times).
- APPLY_LUA is the fence: state, expiry (Redis ``TIME``), approvals (policy read at apply
  time), conflicts, then the change written by the very same body as every push
  (``layout.WRITE_BODY``), all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.storage import layout
from proxy.storage.policy import policy_key


def requests_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{env}}}:requests"


def request_seq_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{env}}}:request_seq"


def schedule_key(env: str) -> str:
    """ZSET request id -> apply_at: the release worker's index of scheduled requests (the
    requests hash stays the truth; an id here whose request is closed is only tidied)."""
    return f"{layout.PREFIX}:{{{env}}}:schedule"


def apply_keys(env: str) -> list[str]:
    """APPLY_LUA's KEYS: flags, meta, changes, outbox (as WRITE_LUA), requests, policy,
    rollouts."""
    return [*layout.write_keys(env), requests_key(env), policy_key(env),
            layout.rollouts_key(env)]


# WRITE_BODY as a function: KEYS and ARGV are its parameters (shadowing the script's), and
# its `return` returns from it.
_WRITER = (layout.OUTBOX_ADD + "local function write_change(KEYS, ARGV, entry_extra)\n"
           + layout.WRITE_BODY + "\nend\n")

# KEYS: flags, meta, changes, outbox, policy. ARGV: 'protected' (a marked write: kill or
# break-glass, allowed where the environment is protected) or 'unprotected' (refused there),
# n_marks, n_marks pairs (field, value) for the change entry, then WRITE_LUA's ARGV.
# A direct write checked against the policy in the same script as the write, so a policy set
# a moment before is never missed. Returns {'approval_required', N} or WRITE_LUA's reply.
# The body is a function too (``guarded_write``), so the rollout script
# (storage/rollouts.py) runs the very same guard and write with its own check around it.
GUARDED_WRITER = _WRITER + """
local function guarded_write(KEYS, ARGV)
local n = tonumber(ARGV[2])
if not n or n < 0 or 2 + 2 * n > #ARGV then
  return redis.error_reply('flagedge write refused, nothing written: bad mark count')
end
local needed = redis.call('HGET', KEYS[5], 'approvals')
if ARGV[1] ~= 'protected' and needed and needed ~= '0' then
  return {'approval_required', needed}
end
local marks, rest = {}, {}
for i = 3, 2 + 2 * n do marks[#marks + 1] = ARGV[i] end
for i = 3 + 2 * n, #ARGV do rest[#rest + 1] = ARGV[i] end
return write_change({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, rest, marks)
end
"""
GUARDED_WRITE_LUA = GUARDED_WRITER + "return guarded_write(KEYS, ARGV)\n"


def guarded_write_args(marks: Mapping[str, str], protected_ok: bool) -> list[str]:
    """GUARDED_WRITE_LUA's ARGV before the write's own: the guard and the entry's marks."""
    out = ["protected" if protected_ok else "unprotected", str(len(marks))]
    for field, value in marks.items():
        out += [field, value]
    return out


def guarded_keys(env: str) -> list[str]:
    return [*layout.write_keys(env), policy_key(env)]


# KEYS: requests, request_seq, schedule, outbox. ARGV: the request's JSON without its opening
# '{' and without an id (the script prepends '{"id":N,'), its apply_at ('' = none: not
# scheduled), the author. A scheduled request enters the release worker's index, and a
# 'proposed' event the outbox, in the same script: no crash between them can lose either.
# Returns the new id.
CREATE_LUA = layout.OUTBOX_ADD + """
for i, want in ipairs({'hash', 'string', 'zset', 'stream'}) do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= want then
    return redis.error_reply('flagedge request refused: ' .. KEYS[i] .. ' is a ' .. kind)
  end
end
local id = redis.call('INCR', KEYS[2])
local body = '{"id":' .. id .. ',' .. ARGV[1]
redis.call('HSET', KEYS[1], id, body)
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], ARGV[2], id) end
outbox_add(KEYS[4], {'type', 'request', 'event', 'proposed', 'request', id, 'by', ARGV[3],
  'body', body})
return id
"""

# KEYS: schedule. The ids of scheduled requests due by Redis' clock (the one the apply
# script judges due-ness by), earliest first, at most ARGV[1] of them.
DUE_LUA = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# Shared by the scripts below: the stored request, compare-and-set against what the caller
# read, and Redis' clock.
_READ = """
local raw = redis.call('HGET', KEYS[REQUESTS], ARGV[1])
if not raw then return {'missing'} end
if raw ~= ARGV[2] then return {'moved'} end
local req = cjson.decode(raw)
if req.state ~= 'open' then return {'closed', req.state} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = type(req.expires_at) == 'number' and now >= req.expires_at
"""

# KEYS: requests, outbox. ARGV: id, the JSON read, the JSON to store, 'expire' | '', who.
# Moves an open request to another state (rejected, cancelled, expired), and tells the
# outbox (event: the new state) in the same script. An 'expire' move
# happens only when Redis' clock says the request is past its expiry; rejecting or
# cancelling a request past its expiry is allowed (neither writes a rule).
# Returns {'ok'} | {'missing'} | {'moved'} | {'closed', state} | {'not_due'}.
TRANSITION_LUA = layout.OUTBOX_ADD + _READ.replace("KEYS[REQUESTS]", "KEYS[1]") + """
if ARGV[4] == 'expire' and not expired then return {'not_due'} end
local ok, new = pcall(cjson.decode, ARGV[3])
if not ok or type(new) ~= 'table' or type(new.state) ~= 'string' then
  return redis.error_reply('flagedge request refused: the new request is not JSON')
end
if not outbox_checked(KEYS[2]) then
  return redis.error_reply('flagedge request refused: ' .. KEYS[2] .. ' is not a stream')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
outbox_add(KEYS[2], {'type', 'request', 'event', new.state, 'request', ARGV[1],
  'by', ARGV[5] or '', 'body', ARGV[3]})
return {'ok'}
"""

# KEYS: flags, meta, changes, outbox, requests, policy, rollouts.
# ARGV: id, the JSON read, the JSON with the caller's approval added ('' = no approval: just
#   try to apply), the applied JSON's head (no closing '}': the script appends
#   ',"applied_version":N}'), the conflict JSON's head (',"reason":"..."}' appended), the
#   expired JSON (whole), n_flags, n_flags pairs (key, its raw JSON at base_version, '' =
#   absent), the evaluators map at base ('' = not compared whole: the request does not change
#   it), n_refs, n_refs evaluator names the request's flags reference, the evaluators map at
#   base holding those of them that existed ('{}' when none), the metadata at base, n_marks, n_marks pairs (change entry fields),
#   n_rollouts, n_rollouts pairs (flag, its rollout JSON without the closing '}': a rollout
#   started by the request, stored with ',"version":N}' appended when the change is written),
#   then WRITE_LUA's ARGV for the change.
# Returns {'applied', version, epoch, stream id} | {'pending', approvals, needed} |
#   {'conflict', reason} | {'expired'} | {'not_due', apply_at} | {'missing'} | {'moved'} |
#   {'closed', state}; a broken key or argument is an error reply, nothing written.
# The outbox hears of it in the same script: the applied change (as every write: the change
# entry, marked with the request and its approvers), or the event 'approved' (an approval
# recorded, no quorum or not due yet), 'conflict' or 'expired', with the stored request.
APPLY_LUA = _WRITER + _READ.replace("KEYS[REQUESTS]", "KEYS[5]") + """
if not outbox_checked(KEYS[4]) then
  return redis.error_reply('flagedge apply refused, nothing written: ' .. KEYS[4] .. ' is not a stream')
end
local function tell(event, body, by)
  outbox_add(KEYS[4], {'type', 'request', 'event', event, 'request', ARGV[1], 'by', by,
    'body', body})
end
-- The approval this call adds (its author), told to the outbox unless the request applies.
local function approver()
  if ARGV[3] == '' then return '' end
  local list = cjson.decode(ARGV[3]).approvals or {}
  return (list[#list] or {}).by or ''
end
if expired then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
  tell('expired', ARGV[6], '')
  return {'expired'}
end
if ARGV[3] ~= '' then req = cjson.decode(ARGV[3]) end
-- The policy as it is now: N (unreadable counts as 1, never as none) and the approvers'
-- list. A proposal asks for review, so it needs at least one approval whatever N; a change
-- scheduled in an unprotected environment (N = 0: `flag --at`, `rollback --at`) needs none,
-- as the same change made now would need none.
local n_raw = redis.call('HGET', KEYS[6], 'approvals')
local needed = 0
if n_raw then
  needed = tonumber(string.match(n_raw, '^%d+$') and n_raw or '1')
end
local scheduled = req.apply_at ~= nil and req.apply_at ~= cjson.null
if needed < 1 and not scheduled then needed = 1 end
local allowed = nil
local a_raw = redis.call('HGET', KEYS[6], 'approvers')
if a_raw then
  local ok, list = pcall(cjson.decode, a_raw)
  allowed = {}
  if ok and type(list) == 'table' then
    for _, name in ipairs(list) do allowed[name] = true end
  end
end
local by, seen = {}, {}
for _, a in ipairs(req.approvals or {}) do
  if a.content_hash == req.content_hash and a.by ~= req.author and not seen[a.by]
     and (allowed == nil or allowed[a.by]) then
    seen[a.by] = true
    by[#by + 1] = a.by
  end
end
if #by < needed then
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
    tell('approved', ARGV[3], approver())
  end
  return {'pending', #by, needed}
end
if type(req.apply_at) == 'number' and now < req.apply_at then
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
    tell('approved', ARGV[3], approver())
  end
  return {'not_due', tostring(req.apply_at)}
end
-- Conflicts: what the change touches or reads must be as it was at base_version.
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k, _ in pairs(b) do if a[k] == nil then return false end end
  return true
end
local moved = {}
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current ~= ARGV[i + 1] then moved[#moved + 1] = 'flag ' .. ARGV[i] end
  i = i + 2
end
local evaluators_now = redis.call('HGET', KEYS[2], 'evaluators') or '{}'
if ARGV[i] ~= '' and evaluators_now ~= ARGV[i] then moved[#moved + 1] = '$evaluators' end
local n_refs = tonumber(ARGV[i + 1])
if n_refs > 0 then
  local base = cjson.decode(ARGV[i + 2 + n_refs])
  local readable, now_map = pcall(cjson.decode, evaluators_now)
  readable = readable and type(now_map) == 'table'
  for r = 1, n_refs do
    local name = ARGV[i + 1 + r]
    if not readable or not same(base[name], now_map[name]) then
      moved[#moved + 1] = '$evaluators.' .. name
    end
  end
end
i = i + 3 + n_refs
if (redis.call('HGET', KEYS[2], 'metadata') or '{}') ~= ARGV[i] then
  moved[#moved + 1] = 'metadata'
end
if #moved > 0 then
  local reason = 'moved since version ' .. tostring(req.base_version) .. ': '
    .. table.concat(moved, ', ')
  local stored = ARGV[5] .. ',"reason":' .. cjson.encode(reason) .. '}'
  redis.call('HSET', KEYS[5], ARGV[1], stored)
  tell('conflict', stored, approver())
  return {'conflict', reason}
end
local n_marks = tonumber(ARGV[i + 1])
local quoted = {}
for _, name in ipairs(by) do quoted[#quoted + 1] = cjson.encode(name) end
local marks = {'request', ARGV[1], 'approvers', '[' .. table.concat(quoted, ',') .. ']'}
for m = i + 2, i + 1 + 2 * n_marks do marks[#marks + 1] = ARGV[m] end
local r0 = i + 2 + 2 * n_marks
local n_rollouts = tonumber(ARGV[r0])
local rollouts_type = redis.call('TYPE', KEYS[7])['ok']
if n_rollouts > 0 and rollouts_type ~= 'none' and rollouts_type ~= 'hash' then
  return redis.error_reply('flagedge apply refused, nothing written: ' .. KEYS[7] .. ' is not a hash')
end
local wargv = {}
for w = r0 + 1 + 2 * n_rollouts, #ARGV do wargv[#wargv + 1] = ARGV[w] end
local res = write_change({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, wargv, marks)
if res.err then return res end
if res[1] == 'conflict' then return redis.error_reply('flagedge apply: unexpected version check') end
if res[1] == 'ok' then
  for r = r0 + 1, r0 + 2 * n_rollouts, 2 do
    redis.call('HSET', KEYS[7], ARGV[r], ARGV[r + 1] .. ',"version":' .. res[2] .. '}')
  end
end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[4] .. ',"applied_version":' .. res[2] .. '}')
return {'applied', res[2], res[3], res[4] or ''}
"""


# KEYS: requests (only to route the call to the environment's node in a Cluster).
TIME_LUA = "return redis.call('TIME')"


def redis_time(client: Any, env: str) -> float:
    """Unix seconds by the clock of the Redis node holding ``env`` (the one the apply
    script reads), to the millisecond."""
    seconds, micros = client.eval(TIME_LUA, 1, requests_key(layout.check_env(env)))
    return round(int(seconds) + int(micros) / 1e6, 3)


def call_apply(client: Any, env: str, args: list[Any]) -> list[Any]:
    return list(client.eval(APPLY_LUA, 7, *apply_keys(env), *args))


def call_transition(client: Any, env: str, request_id: int, old: bytes, new: bytes,
                    expire: bool = False, by: str = "") -> list[Any]:
    return list(client.eval(TRANSITION_LUA, 2, requests_key(env), layout.outbox_key(env),
                            str(request_id), old, new, "expire" if expire else "", by))


def call_create(client: Any, env: str, body_without_id: bytes, author: str,
                apply_at: float | None = None) -> int:
    return int(client.eval(CREATE_LUA, 4, requests_key(env), request_seq_key(env),
                           schedule_key(env), layout.outbox_key(env), body_without_id,
                           "" if apply_at is None else repr(float(apply_at)), author))


def due_ids(client: Any, env: str, limit: int = 100) -> list[int]:
    """Scheduled requests whose apply_at has come (Redis' clock), earliest first."""
    return [int(i) for i in client.eval(DUE_LUA, 1, schedule_key(layout.check_env(env)),
                                        str(limit))]


def scheduled(client: Any, env: str) -> dict[int, float]:
    """The whole schedule index: id -> apply_at."""
    return {int(i): float(s) for i, s in client.zrange(schedule_key(env), 0, -1,
                                                       withscores=True)}


def schedule(client: Any, env: str, request_id: int, apply_at: float) -> None:
    """Index a scheduled request (one created before the index existed)."""
    client.zadd(schedule_key(env), {str(request_id): apply_at}, nx=True)


def unschedule(client: Any, env: str, request_id: int) -> None:
    client.zrem(schedule_key(env), str(request_id))


def read_raw(client: Any, env: str, request_id: int) -> bytes | None:
    layout.check_env(env)
    raw = client.hget(requests_key(env), str(request_id))
    return bytes(raw) if raw is not None else None


def read_all_raw(client: Any, env: str) -> dict[int, bytes]:
    layout.check_env(env)
    out: dict[int, bytes] = {}
    for field, value in client.hgetall(requests_key(env)).items():
        try:
            out[int(field)] = bytes(value)
        except ValueError:
            continue  # not one of ours
    return out
