"""Redis key names and the Lua scripts that read and write them (DESIGN §3).

Every key of one environment carries the hash tag ``{ENV}`` so the environment lives in one
Redis Cluster slot and a single Lua script can read or write it atomically. The global keys
(``flagedge:envs``, ``flagedge:keys``, ``flagedge:events``, ``flagedge:secret``,
``flagedge:layout``) live elsewhere and are written in a second step; a key write and its
announcement are one script except in a Cluster, where ``flagedge:keys`` and
``flagedge:events`` hash to different slots (see KEY_WRITE_LUA).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from proxy.storage.replies import text

PREFIX = "flagedge"
ENVS = f"{PREFIX}:envs"  # SET of environment names
KEYS = f"{PREFIX}:keys"  # HASH sha256(api key) -> JSON record
EVENTS = f"{PREFIX}:events"  # STREAM: env created/deleted, key put/revoked
SECRET = f"{PREFIX}:secret"  # signs stream tokens; SET NX once
LAYOUT = f"{PREFIX}:layout"  # integer: the version of this layout; missing = 1 (older writers)
# The layout this code reads and writes. Bump it only with a change older code cannot read:
# older proxies and CLIs then refuse that Redis with a clear message instead of misreading it.
LAYOUT_VERSION = 1
DEFAULT_MAXLEN = 10_000  # change stream cap (XADD MAXLEN ~)
# The outbox (DESIGN §10) is capped by time, not by count nor by unacknowledged entries:
# every XADD trims entries older than this (exact MINID: each entry is trimmed once, by the
# first write after it is due; '~' would keep whole radix nodes, i.e. up to ~100 entries of
# any age), delivered or not.
OUTBOX_RETENTION_MS = 7 * 86_400_000
EVENTS_MAXLEN = 10_000

# Environment names become part of a hash tag and of URLs: keep them boring.
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_env(env: str) -> str:
    if not ENV_NAME.match(env):
        raise ValueError(
            f"invalid environment name {env!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return env


class LayoutTooNew(Exception):
    """Redis holds data in a layout newer than this code knows: refuse to read or write it."""

    def __init__(self, found: int):
        self.found = found
        super().__init__(f"redis layout {found} is newer than this flagedge (knows "
                         f"{LAYOUT_VERSION})")


def check_layout(raw: Any) -> int:
    """``GET flagedge:layout``'s reply -> the layout version; raises LayoutTooNew when newer
    than LAYOUT_VERSION. Missing means 1 (data written before the key existed); a value that
    is not an integer is another tool's or a future layout's: refused as newer too."""
    if raw is None:
        return 1
    try:
        found = int(text(raw))
    except ValueError:
        raise LayoutTooNew(LAYOUT_VERSION + 1) from None  # unreadable: not ours to write
    if found > LAYOUT_VERSION:
        raise LayoutTooNew(found)
    return found


def flags_key(env: str) -> str:
    return f"{PREFIX}:{{{env}}}:flags"


def meta_key(env: str) -> str:
    return f"{PREFIX}:{{{env}}}:meta"


def changes_key(env: str) -> str:
    return f"{PREFIX}:{{{env}}}:changes"


def outbox_key(env: str) -> str:
    """``flagedge:{ENV}:outbox`` STREAM: one entry per applied change and per request state
    change, delivered to the environment's webhooks (DESIGN §10, release/notify.py)."""
    return f"{PREFIX}:{{{env}}}:outbox"


def rollouts_key(env: str) -> str:
    """``flagedge:{ENV}:rollouts`` HASH flag -> the rollout's JSON (DESIGN §10,
    release/rollout.py), written by the same script as the rule it describes."""
    return f"{PREFIX}:{{{env}}}:rollouts"


def env_keys(env: str) -> list[str]:
    return [flags_key(env), meta_key(env), changes_key(env)]


def write_keys(env: str) -> list[str]:
    """WRITE_LUA's KEYS: flags, meta, changes, outbox."""
    return [*env_keys(env), outbox_key(env)]


# Appends one entry to an outbox stream (its key, then field/value pairs), trimming what is
# older than OUTBOX_RETENTION_MS by Redis' clock. Every script that changes an environment or
# a request calls it in the same script as the change: all or nothing.
OUTBOX_ADD = """
local function outbox_add(key, fields)
  local t = redis.call('TIME')
  local minid = tostring(tonumber(t[1]) * 1000 - tonumber('OUTBOX_RETENTION_MS')) .. '-0'
  return redis.call('XADD', key, 'MINID', minid, '*', unpack(fields))
end
local function outbox_checked(key)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == 'stream'
end
""".replace("'OUTBOX_RETENTION_MS'", f"'{OUTBOX_RETENTION_MS}'")


def env_of_changes_key(key: str) -> str:
    """``flagedge:{prod}:changes`` -> ``prod``."""
    return key[len(PREFIX) + 2 : -len("}:changes")]


# KEYS: flags, meta, changes. Returns {flags HGETALL, meta HGETALL, last stream id}: one
# consistent view, so following the stream from that id misses and repeats nothing.
SNAPSHOT_LUA = """
local flags = redis.call('HGETALL', KEYS[1])
local meta = redis.call('HGETALL', KEYS[2])
local last = '0-0'
if redis.call('EXISTS', KEYS[3]) == 1 then
  local info = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if #info > 0 then last = info[1][1] end
end
return {flags, meta, last}
"""


class Snapshot(NamedTuple):
    """SNAPSHOT_LUA's reply: flag key -> stored flag JSON (bytes, parsed by the caller), the
    meta hash as text, and the change stream's last entry id ("0-0" when empty)."""

    flags: dict[str, bytes]
    meta: dict[str, str]
    last_id: str


def parse_snapshot(reply: Sequence[Any]) -> Snapshot:
    flags, meta, last = reply
    return Snapshot({text(flags[i]): flags[i + 1] for i in range(0, len(flags), 2)},
                    {text(meta[i]): text(meta[i + 1]) for i in range(0, len(meta), 2)},
                    text(last))

# KEYS: flags, meta, changes, outbox.
# ARGV: expect_version ('' = any), new_epoch, author, message, maxlen, op ('' = derive),
#       evaluators ('' = unchanged), metadata ('' = unchanged), n_upserts,
#       fractional_hash ('' = unchanged; stored as is in meta, unset meaning v2; in the
#       entry's before/after as a JSON string, DESIGN §9),
#       then n_upserts pairs (key, json), then keys to delete.
# Writes only what differs from the stored state, builds `before`/`after` from the stored
# raw JSON by concatenation (cjson would reorder keys and turn [] into {}), bumps the
# version and appends the change entry, and the same entry (plus `type change` and the
# change's stream id) to the outbox: all or nothing, one slot, at any size.
# Redis does not roll a script back when it fails part-way, so the script reads and checks
# everything that could make a write fail (key types, a non-integer version, arguments)
# before its first write; the writes after that cannot fail. HSET/HDEL go in chunks of
# WRITE_CHUNK fields: Lua's unpack stops at ~8,000 values ("too many results to unpack").
# Returns {'ok', version, epoch, stream_id} | {'noop', version, epoch} |
#         {'conflict', version, epoch}; a broken key or argument is an error reply.
WRITE_CHUNK = 1000
# The body takes `entry_extra`, more field/value pairs for the change entry (the release
# side's marks: request, approvers, kill, break_glass; see storage/requests.py, which runs
# this same body as a function): one entry format, one writer.
WRITE_BODY = """
local function refuse(msg) return redis.error_reply('flagedge write refused, nothing written: ' .. msg) end
local raw_version = redis.call('HGET', KEYS[2], 'version')
if raw_version and not string.match(raw_version, '^%d+$') then
  return refuse(KEYS[2] .. ' version is not a non-negative integer: ' .. raw_version)
end
local current = tonumber(raw_version or '0')
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local flags_type = redis.call('TYPE', KEYS[1])['ok']
if flags_type ~= 'none' and flags_type ~= 'hash' then
  return refuse(KEYS[1] .. ' is a ' .. flags_type .. ', not a hash')
end
local changes_type = redis.call('TYPE', KEYS[3])['ok']
if changes_type ~= 'none' and changes_type ~= 'stream' then
  return refuse(KEYS[3] .. ' is a ' .. changes_type .. ', not a stream')
end
if not outbox_checked(KEYS[4]) then
  return refuse(KEYS[4] .. ' is not a stream')
end
if not string.match(ARGV[5], '^%d+$') then
  return refuse('maxlen must be a non-negative integer, got ' .. ARGV[5])
end
local n_up = tonumber(ARGV[9])
if not n_up or n_up < 0 or 10 + 2 * n_up > #ARGV then
  return refuse('bad upsert count ' .. tostring(ARGV[9]))
end
local new_hash = ARGV[10]
if new_hash ~= '' and not string.match(new_hash, '^v%d+$') then
  return refuse('fractional_hash must be v<number>, got ' .. new_hash)
end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  return {'conflict', current, epoch or ''}
end
local before, after = {}, {}
local up_pairs, del_keys = {}, {}
local i = 11
for _ = 1, n_up do
  local k, v = ARGV[i], ARGV[i + 1]
  i = i + 2
  local old = redis.call('HGET', KEYS[1], k)
  if old ~= v then
    table.insert(before, cjson.encode(k) .. ':' .. (old or 'null'))
    table.insert(after, cjson.encode(k) .. ':' .. v)
    table.insert(up_pairs, k)
    table.insert(up_pairs, v)
  end
end
while i <= #ARGV do
  local k = ARGV[i]
  i = i + 1
  local old = redis.call('HGET', KEYS[1], k)
  if old then
    table.insert(before, cjson.encode(k) .. ':' .. old)
    table.insert(after, cjson.encode(k) .. ':null')
    table.insert(del_keys, k)
  end
end
local b_parts = {'"flags":{' .. table.concat(before, ',') .. '}'}
local a_parts = {'"flags":{' .. table.concat(after, ',') .. '}'}
local n_flags = #up_pairs / 2
local touched = n_flags + #del_keys
local meta_pairs = {}
for _, field in ipairs({{'evaluators', '$evaluators', 7}, {'metadata', 'metadata', 8}}) do
  local new = ARGV[field[3]]
  if new ~= '' then
    local old = redis.call('HGET', KEYS[2], field[1]) or '{}'
    if old ~= new then
      table.insert(b_parts, '"' .. field[2] .. '":' .. old)
      table.insert(a_parts, '"' .. field[2] .. '":' .. new)
      table.insert(meta_pairs, field[1])
      table.insert(meta_pairs, new)
      touched = touched + 1
    end
  end
end
if new_hash ~= '' then
  local old = redis.call('HGET', KEYS[2], 'fractional_hash') or 'v2'
  if old ~= new_hash then
    table.insert(b_parts, '"fractional_hash":' .. cjson.encode(old))
    table.insert(a_parts, '"fractional_hash":"' .. new_hash .. '"')
    table.insert(meta_pairs, 'fractional_hash')
    table.insert(meta_pairs, new_hash)
    touched = touched + 1
  end
end
if touched == 0 then
  return {'noop', current, epoch or ''}
end
local op = ARGV[6]
if op == '' then
  if #del_keys == 0 and touched == n_flags then op = 'upsert'
  elseif n_flags == 0 and touched == #del_keys then op = 'delete'
  else op = 'replace' end
end
local b_json = '{' .. table.concat(b_parts, ',') .. '}'
local a_json = '{' .. table.concat(a_parts, ',') .. '}'
local t = redis.call('TIME')
local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
-- Everything is checked: from here on nothing can fail.
local chunk = tonumber('WRITE_CHUNK')
if not epoch then
  epoch = ARGV[2]
  table.insert(meta_pairs, 'epoch')
  table.insert(meta_pairs, epoch)
end
for s = 1, #up_pairs, 2 * chunk do
  redis.call('HSET', KEYS[1], unpack(up_pairs, s, math.min(s + 2 * chunk - 1, #up_pairs)))
end
for s = 1, #del_keys, chunk do
  redis.call('HDEL', KEYS[1], unpack(del_keys, s, math.min(s + chunk - 1, #del_keys)))
end
local version = current + 1
redis.call('HSET', KEYS[2], 'version', version, 'updated_at', at, 'updated_by', ARGV[3],
  unpack(meta_pairs))
local entry = {'version', version, 'epoch', epoch, 'op', op, 'before', b_json,
  'after', a_json, 'author', ARGV[3], 'message', ARGV[4], 'at', at}
for _, v in ipairs(entry_extra) do entry[#entry + 1] = v end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(entry))
outbox_add(KEYS[4], {'type', 'change', 'change_id', id, unpack(entry)})
return {'ok', version, epoch, id}
""".replace("'WRITE_CHUNK'", f"'{WRITE_CHUNK}'")
WRITE_LUA = OUTBOX_ADD + "local entry_extra = {}\n" + WRITE_BODY

# KEYS: flags, meta, changes. Deletes the environment's data (one slot).
DELETE_LUA = """
local version = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return version
"""

# KEYS: flagedge:keys, flagedge:events, flagedge:layout.
# ARGV: op ('put' | 'revoked'), key hash (64 hex), record JSON ('' for revoked), events maxlen.
# The key write and its announcement on flagedge:events, all or nothing: every argument and
# key type is checked before the first write, and the writes after that cannot fail. Also
# stamps the layout version (SET NX) as every first write does.
# Returns the stored record before the write (nil if none); 'revoked' of an unknown hash
# writes and announces nothing.
KEY_WRITE_LUA = """
local function refuse(msg) return redis.error_reply('flagedge key write refused, nothing written: ' .. msg) end
local op, hash, record, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if op ~= 'put' and op ~= 'revoked' then return refuse('unknown op ' .. tostring(op)) end
if not hash or not string.match(hash, '^' .. string.rep('%x', 64) .. '$') then
  return refuse('key hash must be 64 hex digits, got ' .. tostring(hash))
end
if not maxlen or not string.match(maxlen, '^%d+$') then
  return refuse('maxlen must be a non-negative integer, got ' .. tostring(maxlen))
end
if op == 'put' then
  local ok, decoded = pcall(cjson.decode, record or '')
  if not ok or type(decoded) ~= 'table' then return refuse('record is not a JSON object') end
end
for i, want in ipairs({'hash', 'stream', 'string'}) do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= want then
    return refuse(KEYS[i] .. ' is a ' .. kind .. ', not a ' .. want)
  end
end
local old = redis.call('HGET', KEYS[1], hash)
if op == 'revoked' and not old then return old end
-- Everything is checked: from here on nothing can fail.
if op == 'put' then redis.call('HSET', KEYS[1], hash, record)
else redis.call('HDEL', KEYS[1], hash) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', 'key', 'op', op, 'hash', hash)
redis.call('SET', KEYS[3], 'LAYOUT_VERSION', 'NX')
return old
""".replace("'LAYOUT_VERSION'", f"'{LAYOUT_VERSION}'")
