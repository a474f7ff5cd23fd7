"""API keys in Redis: created through the CLI, stored only as sha256, listed without secrets,
revoked, exported for --keys FILE."""

from __future__ import annotations

import hashlib

import orjson
import pytest
import redis

from proxy.keys import KeyRing
from proxy.storage import keys, layout
from tests.integration.test_cli_publish import flagedge

pytestmark = pytest.mark.integration


def everything_in(client: redis.Redis) -> bytes:
    """Every key name and value in the database, whatever its type."""
    out = []
    for name in client.scan_iter():
        out.append(name)
        kind = client.type(name)
        if kind == b"string":
            out.append(client.get(name))
        elif kind == b"hash":
            for k, v in client.hgetall(name).items():
                out += [k, v]
        elif kind == b"set":
            out += list(client.smembers(name))
        elif kind == b"stream":
            for _id, fields in client.xrange(name):
                for k, v in fields.items():
                    out += [k, v]
    return b"\n".join(out)


def test_keys_cli_flow_and_keys_never_stored_in_clear(redis_server, tmp_path):
    url = redis_server.url
    client = redis.Redis.from_url(url)
    r = flagedge("keys", "create", "--env", "prod", "--kind", "server", "--name", "backend",
                 "--rate-limit", "20", url=url)
    assert r.returncode == 0, r.stderr
    raw = r.stdout.strip()
    assert raw.startswith("fe_server_") and "not shown again" in r.stderr
    created = orjson.loads(flagedge("keys", "create", "--env", "dev", "--kind", "client",
                                    "--name", "web", "--json", url=url).stdout)
    digest = hashlib.sha256(raw.encode()).hexdigest()
    dump = everything_in(client)
    assert raw.encode() not in dump and created["key"].encode() not in dump
    assert raw.split("_", 2)[2].encode() not in dump  # not even the random part
    assert digest.encode() in dump
    stored = orjson.loads(client.hget(layout.KEYS, digest))
    assert stored.pop("created_at") > 0
    assert stored == {"env": "prod", "kind": "server", "name": "backend", "rate_limit": 20.0}
    listed = flagedge("keys", "list", "--json", url=url).stdout
    assert raw not in listed and created["key"] not in listed
    assert {k["id"] for k in orjson.loads(listed)} == {digest[:12], created["id"]}
    assert [k["name"] for k in orjson.loads(
        flagedge("keys", "list", "--env", "dev", "--json", url=url).stdout)] == ["web"]
    out = tmp_path / "keys.json"
    assert flagedge("keys", "export", "-o", str(out), url=url).returncode == 0
    assert raw not in out.read_text()
    ring = KeyRing()
    assert ring.load_file(out) == 2
    assert ring.lookup(raw).kind == "server" and ring.lookup(created["key"]).env == "dev"
    r = flagedge("keys", "revoke", digest[:12], url=url)
    assert r.returncode == 0 and f"revoked server key {digest[:12]}" in r.stdout
    assert client.hget(layout.KEYS, digest) is None
    events = [f for _i, f in client.xrange(layout.EVENTS)]
    assert {b"type": b"key", b"op": b"revoked", b"hash": digest.encode()} in events
    r = flagedge("keys", "revoke", digest[:12], url=url)
    assert r.returncode == 5 and "no key with id" in r.stderr
    r = flagedge("keys", "create", "--env", "prod", "--kind", "root", "--name", "x", url=url)
    assert r.returncode == 2


def test_revoke_refuses_ambiguous_or_empty_ids(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    for _ in range(20):  # 20 hashes over 16 first hex digits: some digit is shared
        keys.create(client, "prod", "client", "n")
    firsts = [h[0] for h in keys.list_keys(client)]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(LookupError, match="ambiguous"):
        keys.revoke(client, shared)
    with pytest.raises(LookupError, match="no key with id"):
        keys.revoke(client, "")
    assert len(keys.list_keys(client)) == 20
