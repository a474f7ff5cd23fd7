"""Key writes are one script with their announcement, and proxies re-read keys periodically:
a key removed without an announcement still stops working within ``keys_refresh``."""

from __future__ import annotations

import pytest
import redis

from proxy.keys import hash_key
from proxy.storage import keys, layout
from tests.integration.test_keys_redis import everything_in
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"}}}


def test_key_deleted_without_announcement_stops_working_within_the_refresh(proxy_factory):
    server = proxy_factory(extra_args=["--keys-refresh", "0.3"])
    server.push(DOC)
    raw = server.create_key()
    kept = server.create_key(name="kept")
    # By hand, as an operator or a lost XADD would leave it: no event on flagedge:events.
    events_before = server.redis_client.xlen(layout.EVENTS)
    server.redis_client.hdel(layout.KEYS, hash_key(raw))
    wait_until(lambda: not server.key_works(raw), timeout=5,
               what="the key deleted by HDEL to be refused")
    assert server.redis_client.xlen(layout.EVENTS) == events_before
    assert server.key_works(kept)
    assert "key refresh: 1 revoked and 0 added without an announcement" in server.logs()


def test_keys_refresh_zero_is_off(proxy_factory):
    server = proxy_factory(extra_args=["--keys-refresh", "0"])
    server.push(DOC)
    raw = server.create_key()
    server.redis_client.hdel(layout.KEYS, hash_key(raw))
    server.revoke_key(server.create_key(name="marker"))  # announced: processed after the HDEL
    wait_until(lambda: "key revoked" in server.logs(), timeout=5, what="marker revocation")
    assert server.key_works(raw)  # no re-read: only announcements count


def test_refresh_keeps_known_keys_after_redis_lost_its_data(proxy_factory, redis_server):
    """An empty flagedge:keys after a data loss is the loss, not a mass revocation: the
    periodic re-read must not drop the keys the full load kept."""
    server = proxy_factory(extra_args=["--keys-refresh", "0.2", "--log-level", "debug"])
    server.push(DOC)
    raw = server.create_key()
    redis_server.restart(empty=True)
    kept = "key refresh: no keys in redis since it lost its data; keeping 1 known keys"
    wait_until(lambda: server.logs().count(kept) >= 3, timeout=10,
               what="three refresh rounds after the data loss")
    assert server.key_works(raw)


def test_revoke_writes_record_and_announcement_in_one_script(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    raw, record = keys.create(client, "prod", "client", "web")
    digest = hash_key(raw)
    assert client.get(layout.LAYOUT) == b"1"  # the first write stamps the layout
    revoked = keys.revoke(client, record.id)
    assert revoked.name == "web" and client.hget(layout.KEYS, digest) is None
    ops = [(f[b"op"], f[b"hash"]) for _i, f in client.xrange(layout.EVENTS)]
    assert ops == [(b"put", digest.encode()), (b"revoked", digest.encode())]
    # Revoking what is gone writes and announces nothing.
    assert client.eval(layout.KEY_WRITE_LUA, 3, layout.KEYS, layout.EVENTS, layout.LAYOUT,
                       "revoked", digest, "", "100") is None
    assert client.xlen(layout.EVENTS) == 2


@pytest.mark.parametrize("args, message", [
    (("delete", "HASH", "", "100"), "unknown op"),
    (("revoked", "not-a-hash", "", "100"), "64 hex digits"),
    (("revoked", "HASH", "", "many"), "maxlen"),
    (("put", "HASH", "not json", "100"), "not a JSON object"),
])
def test_key_script_refuses_bad_arguments_and_writes_nothing(redis_server, args, message):
    client = redis.Redis.from_url(redis_server.url)
    raw, _record = keys.create(client, "prod", "client", "web")
    args = tuple(hash_key(raw) if a == "HASH" else a for a in args)
    before = everything_in(client)
    with pytest.raises(redis.ResponseError, match=rf"nothing written: .*{message}"):
        client.eval(layout.KEY_WRITE_LUA, 3, layout.KEYS, layout.EVENTS, layout.LAYOUT, *args)
    assert everything_in(client) == before


def test_key_script_refuses_a_broken_events_key_before_deleting(redis_server):
    """Were the HDEL done first, this revoke would be half-written: deleted, never announced."""
    client = redis.Redis.from_url(redis_server.url)
    raw, record = keys.create(client, "prod", "client", "web")
    client.delete(layout.EVENTS)
    client.set(layout.EVENTS, "not a stream")
    with pytest.raises(redis.ResponseError, match=r"nothing written: .*not a stream"):
        keys.revoke(client, record.id)
    assert client.hget(layout.KEYS, hash_key(raw)) is not None
