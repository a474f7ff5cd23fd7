"""Webhooks and their deliveries in Redis (DESIGN §10), all in the environment's ``{ENV}``
slot beside its outbox (``layout.outbox_key``):

- ``flagedge:{ENV}:webhooks`` HASH webhook id -> the webhook's JSON (release/webhooks.py);
- ``flagedge:{ENV}:deliveries`` HASH ``ENTRY_ID HOOK_ID`` -> ``{"attempts": n, "next_at": t,
  "error": "..."}``: a delivery being retried, so a worker that takes over an entry (XAUTOCLAIM)
  carries on with its attempts and backoff; removed when the entry is acknowledged;
- ``flagedge:{ENV}:failed`` STREAM, one entry per delivery given up (capped by count);
- the consumer group ``notify`` on the outbox: every serve's delivery worker is a consumer.

Plain functions on a redis-py client: the sync one (the CLI) returns values, the asyncio
one (the delivery worker) awaitables; both take the same arguments.
"""

from __future__ import annotations

from typing import Any

from proxy.storage import layout

GROUP = "notify"
FAILED_MAXLEN = 10_000


def webhooks_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{layout.check_env(env)}}}:webhooks"


def deliveries_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{env}}}:deliveries"


def failed_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{layout.check_env(env)}}}:failed"


def delivery_field(entry_id: str, hook_id: str) -> str:
    return f"{entry_id} {hook_id}"


def put_webhook(client: Any, env: str, hook_id: str, record: bytes) -> Any:
    return client.hset(webhooks_key(env), hook_id, record)


def remove_webhook(client: Any, env: str, hook_id: str) -> Any:
    return client.hdel(webhooks_key(env), hook_id)


def read_webhooks(client: Any, env: str) -> Any:
    """HGETALL: webhook id -> JSON (bytes)."""
    return client.hgetall(webhooks_key(env))


def add_failed(client: Any, env: str, fields: dict[str, str]) -> Any:
    return client.xadd(failed_key(env), fields, maxlen=FAILED_MAXLEN, approximate=True)


def read_failed(client: Any, env: str, count: int = 100) -> Any:
    """Newest first: [(stream id, {field: value})]."""
    return client.xrevrange(failed_key(env), count=count)


# KEYS: outbox, deliveries. ARGV: entry id, then the delivery fields to delete.
# Acknowledges an entry and forgets its retry state in one step, so a worker that claims it
# later finds it gone rather than half-done.
ACK_LUA = """
redis.call('XACK', KEYS[1], 'GROUP', ARGV[1])
if #ARGV > 1 then redis.call('HDEL', KEYS[2], unpack(ARGV, 2)) end
return 1
""".replace("'GROUP'", f"'{GROUP}'")
