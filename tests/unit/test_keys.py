import hashlib

import orjson
import pytest

from proxy.keys import KeyRecord, KeyRing, dump_export, generate_key, hash_key, parse_export


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
