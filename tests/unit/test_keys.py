import hashlib

import orjson
import pytest

from proxy.keys import (
    KeyRecord,
    KeyRing,
    Refusal,
    dump_export,
    generate_key,
    hash_key,
    identify,
    keys_loaded,
    kind_allows,
    parse_export,
)


def record(h: str, env: str = "prod", kind: str = "client") -> KeyRecord:
    return KeyRecord(id=h[:12], env=env, kind=kind, name="n", created_at=1.0)


def test_generated_keys_are_prefixed_random_and_hash_to_sha256():
    a, b = generate_key("client"), generate_key("client")
    assert a.startswith("fe_client_") and a != b
    assert len(a) - len("fe_client_") >= 43  # 32 random bytes, base64url
    assert generate_key("admin").startswith("fe_admin_")
    assert hash_key(a) == hashlib.sha256(a.encode()).hexdigest()
    with pytest.raises(ValueError, match="unknown key kind"):
        generate_key("root")


def test_keyring_lookup_put_remove_and_notifications():
    ring = KeyRing()
    raw = generate_key("server")
    h = hash_key(raw)
    seen: list[KeyRecord] = []
    ring.subscribe(seen.append)
    assert ring.lookup(raw) is None and ring.lookup("") is None
    ring.put(h, record(h, kind="server"))
    assert ring.lookup(raw) == record(h, kind="server")
    assert ring.lookup(raw + "x") is None
    assert seen == []  # a new key closes nothing
    ring.put(h, record(h, kind="client"))  # changed: streams of the old record must close
    assert seen == [record(h, kind="server")]
    assert ring.remove(h) == record(h, kind="client")
    assert ring.lookup(raw) is None
    assert seen[-1] == record(h, kind="client")
    assert ring.remove(h) is None


def test_replace_all_notifies_only_removed_or_changed():
    ring = KeyRing()
    h1, h2, h3 = (hash_key(generate_key("client")) for _ in range(3))
    ring.replace_all({h1: record(h1), h2: record(h2)})
    seen: list[KeyRecord] = []
    ring.subscribe(seen.append)
    ring.replace_all({h1: record(h1), h3: record(h3)})
    assert seen == [record(h2)]
    assert ring.loaded and len(ring) == 2


def test_export_round_trip_and_errors_name_the_entry(tmp_path):
    h = hash_key(generate_key("client"))
    rec = KeyRecord(id=h[:12], env="prod", kind="client", name="web", created_at=2.5,
                    rate_limit=10.0)
    data = dump_export({h: rec})
    assert data == dump_export({h: rec})  # stable bytes
    assert parse_export(data) == {h: rec}
    path = tmp_path / "keys.json"
    path.write_bytes(data)
    ring = KeyRing()
    assert ring.load_file(path) == 1
    bad = orjson.dumps({"keys": [{"hash": h, "env": "prod", "kind": "root"}]})
    with pytest.raises(ValueError, match=r"keys\[0\].*unknown kind"):
        parse_export(bad, source="k.json")
    with pytest.raises(ValueError, match=r"k.json: keys\[0\].hash"):
        parse_export(orjson.dumps({"keys": [{"hash": "abc"}]}), source="k.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_export(b"{", source="k.json")


def test_identify_names_the_record_or_why_there_is_none():
    api_key = generate_key("server")
    key_hash = hash_key(api_key)
    ring = KeyRing()
    # Never filled (key source unreachable): no key can be judged yet, not even a bad one.
    assert identify(ring, api_key) is Refusal.NOT_LOADED
    assert identify(ring, "fe_client_nope") is Refusal.NOT_LOADED
    assert not keys_loaded(ring)
    ring.replace_all({key_hash: record(key_hash, env="dev", kind="server")})
    assert keys_loaded(ring)
    assert identify(ring, api_key) == record(key_hash, env="dev", kind="server")
    assert identify(ring, api_key + "x") is Refusal.UNKNOWN
    assert identify(ring, "") is Refusal.UNKNOWN
    ring.remove(key_hash)  # revoked
    assert identify(ring, api_key) is Refusal.UNKNOWN


def test_identify_without_a_ring_knows_no_key():
    assert identify(None, generate_key("admin")) is Refusal.UNKNOWN
    assert keys_loaded(None)


def test_by_id_follows_puts_and_revocations():
    ring = KeyRing()
    h1, h2 = (hash_key(generate_key("client")) for _ in range(2))
    ring.replace_all({h1: record(h1)})
    assert ring.by_id(h1[:12]) == record(h1) and ring.by_id(h2[:12]) is None
    ring.put(h2, record(h2, kind="server"))  # added after the first check
    assert ring.by_id(h2[:12]) == record(h2, kind="server")
    ring.put(h2, record(h2, kind="admin"))  # changed
    assert ring.by_id(h2[:12]) == record(h2, kind="admin")
    ring.remove(h1)
    assert ring.by_id(h1[:12]) is None
    ring.replace_all({})
    assert ring.by_id(h2[:12]) is None


def test_kinds_rank_client_server_admin():
    assert kind_allows("admin", "client") and kind_allows("server", "server")
    assert not kind_allows("client", "server") and not kind_allows("server", "admin")
    assert not kind_allows("root", "client")  # an unknown kind may do nothing
