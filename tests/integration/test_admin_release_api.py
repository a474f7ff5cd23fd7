"""The admin HTTP API for release control (DESIGN §10, issue 23): the CLI's flows over HTTP,
with admin keys of different roles, against a real `flagedge serve` and redis-server. Each
refusal is checked to have written nothing (version, change log, requests as stored)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from proxy.storage import keys as stored_keys
from tests.integration.conftest import ProxyServer
from tests.integration.release_support import (
    OFF,
    ON,
    flagedge,
    log_length,
    stored_flag,
    stored_request,
    version,
)
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

ENV = "test"
BASE = f"/v1/admin/envs/{ENV}"
DOC = {"flags": {"banner": OFF, "checkout": ON}}


def admin_key(server: ProxyServer, name: str, *roles: str) -> str:
    """An admin key named ``name`` holding ``roles``, once the proxy knows it."""
    raw, _record = stored_keys.create(server.redis_client, ENV, "admin", name,
                                      roles=tuple(sorted(roles)))
    wait_until(lambda: server.key_works(raw), timeout=10, what=f"key of {name} on the proxy")
    return raw


def as_(server: ProxyServer, key: str) -> httpx.Client:
    return server.client(key)


def served(server: ProxyServer, client_key: str, flag: str) -> Any:
    r = httpx.post(f"{server.url}/ofrep/v1/evaluate/flags/{flag}", json={"context": {}},
                   headers={"Authorization": f"Bearer {client_key}"}, timeout=2.0)
    return r.json().get("value") if r.status_code == 200 else r.status_code


def protect(server: ProxyServer, approvals: int = 1) -> None:
    out = flagedge("envs", "protect", ENV, "--approvals", str(approvals),
                   url=server.redis.url)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def served_doc(proxy_server: ProxyServer) -> ProxyServer:
    proxy_server.push(DOC)
    return proxy_server


def test_protected_push_is_409_and_a_request_approved_by_another_key_is_served(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    protect(server)
    ann = admin_key(server, "ann", "view", "propose")
    bob = admin_key(server, "bob", "view", "approve")
    client_key = server.create_key("client")
    assert served(server, client_key, "banner") is False
    before = (version(redis, ENV), log_length(redis, ENV))
    new_doc = {"flags": {"banner": ON, "checkout": ON}}
    with as_(server, ann) as c:
        refused = c.put(f"{BASE}/document", json={"document": new_doc, "message": "go"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["errorCode"] == "APPROVAL_REQUIRED"
        assert refused.json()["next"] == f"POST {BASE}/requests"
        assert (version(redis, ENV), log_length(redis, ENV)) == before  # nothing written
        created = c.post(f"{BASE}/requests", json={"document": new_doc, "message": "banner on"})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        assert created.json()["author"] == "ann"  # the key's name, whatever the body says
        own = c.post(f"{BASE}/requests/{request_id}/approve")
        assert own.status_code == 403 and "approve role" in own.json()["errorDetails"]
    with as_(server, bob) as c:
        listed = c.get(f"{BASE}/requests").json()
        assert [r["id"] for r in listed] == [request_id]
        approved = c.post(f"{BASE}/requests/{request_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "applied"
        applied_version = approved.json()["version"]
    start = time.monotonic()
    wait_until(lambda: served(server, client_key, "banner") is True, timeout=1.0,
               what="the approved value served by OFREP")
    assert time.monotonic() - start <= 1.0
    assert stored_request(redis, ENV, request_id)["state"] == "applied"
    entry = httpx.get(f"{server.url}{BASE}/history", params={"limit": 1},
                      headers={"Authorization": f"Bearer {bob}"}).json()[0]
    assert (entry["version"], entry["author"], entry["request"], entry["approvers"]) == (
        applied_version, "ann", request_id, ["bob"])


def test_self_approval_is_403_even_with_the_approve_role(served_doc: ProxyServer) -> None:
    server = served_doc
    protect(server)
    carl = admin_key(server, "carl", "propose", "approve")
    with as_(server, carl) as c:
        request_id = c.post(f"{BASE}/requests", json={
            "change": {"flag": "banner", "op": "default", "variant": "on"},
            "message": "x"}).json()["id"]
        own = c.post(f"{BASE}/requests/{request_id}/approve")
    assert own.status_code == 403
    assert "may not approve it" in own.json()["errorDetails"]
    assert stored_request(server.redis_client, ENV, request_id)["approvals"] == []


def test_a_view_key_reads_everything_and_every_write_is_403_naming_the_role(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    vic = admin_key(server, "vic", "view")
    before = (version(redis, ENV), log_length(redis, ENV))
    with as_(server, vic) as c:
        doc = c.get(f"{BASE}/document")
        assert doc.status_code == 200 and doc.headers["etag"] == f'"{before[0]}"'
        assert set(doc.json()["flags"]) == {"banner", "checkout"}
        for path in ("/v1/admin/envs", f"{BASE}/history", f"{BASE}/policy",
                     f"{BASE}/requests", f"{BASE}/flags/banner", f"{BASE}/webhooks"):
            assert c.get(path).status_code == 200, path
        writes = {
            ("PUT", f"{BASE}/document"): ({"document": DOC}, "propose"),
            ("PATCH", f"{BASE}/flags/banner"): ({"op": "default", "variant": "on"}, "propose"),
            ("PATCH", f"{BASE}/flags/checkout"): ({"op": "disable"}, "propose"),
            ("POST", f"{BASE}/requests"): ({"document": DOC, "message": "m"}, "propose"),
            ("POST", f"{BASE}/rollback"): ({"version": 0}, "propose"),
            ("PUT", f"{BASE}/policy"): ({"approvals": 1}, "manage"),
            ("POST", f"{BASE}/webhooks"): ({"url": "http://127.0.0.1:9/x",
                                            "allow_private": True}, "manage"),
            ("DELETE", f"{BASE}/webhooks/wh_000000000000"): (None, "manage"),
            ("GET", "/v1/admin/keys"): (None, "manage"),
            ("POST", "/v1/admin/keys"): ({"kind": "client", "name": "x"}, "manage"),
        }
        for (method, path), (body, role) in writes.items():
            r = c.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["errorCode"] == "FORBIDDEN"
            assert f"needs the {role} role" in r.json()["errorDetails"], (method, path)
        assert c.post(f"{BASE}/preview", json={"document": DOC}).status_code == 200
    assert (version(redis, ENV), log_length(redis, ENV)) == before
    assert redis.hlen(f"flagedge:{{{ENV}}}:requests") == 0
    assert redis.hgetall(f"flagedge:{{{ENV}}}:policy") == {}


def test_keys_of_other_kinds_environments_or_none_are_refused(served_doc: ProxyServer) -> None:
    server = served_doc
    server_key = server.create_key("server")
    other = admin_key(server, "olga", "view")
    raw, _rec = stored_keys.create(server.redis_client, "other", "admin", "otto")
    assert httpx.get(f"{server.url}{BASE}/document").status_code == 401
    with as_(server, server_key) as c:
        assert c.get(f"{BASE}/document").status_code == 403
    with as_(server, other) as c:
        elsewhere = c.get("/v1/admin/envs/other/document")
        assert elsewhere.status_code == 403
        assert "for environment test" in elsewhere.json()["errorDetails"]
        assert c.get(f"{BASE}/requests/99").status_code == 404
        assert c.get(f"{BASE}/flags/nope").status_code == 404
    with as_(server, raw) as c:  # a key of env "other": the proxy serves test only
        assert c.get("/v1/admin/envs/other/document").status_code in (401, 404)


def test_unprotected_push_with_if_match_preview_history_and_rollback(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    pat = admin_key(server, "pat", "view", "propose", "kill")
    client_key = server.create_key("client")
    with as_(server, pat) as c:
        etag = c.get(f"{BASE}/document").headers["etag"]
        new_doc = {"flags": {"banner": ON, "checkout": ON}}
        preview = c.post(f"{BASE}/preview", json={"document": new_doc}).json()
        assert list(preview["diff"]["changed"]) == ["banner"]
        assert [i["flag"] for i in preview["impact"]] == ["banner"]
        assert version(redis, ENV) == int(etag.strip('"'))  # a preview writes nothing
        stale = c.put(f"{BASE}/document", json={"document": new_doc},
                      headers={"If-Match": '"999"'})
        assert stale.status_code == 409 and stale.json()["errorCode"] == "CONFLICT"
        pushed = c.put(f"{BASE}/document", json={"document": new_doc, "message": "on"},
                       headers={"If-Match": etag})
        assert pushed.status_code == 200, pushed.text
        new_version = pushed.json()["version"]
        assert pushed.headers["etag"] == f'"{new_version}"'
        server.wait_version(new_version)
        assert served(server, client_key, "banner") is True
        entry = c.get(f"{BASE}/history").json()[0]
        assert (entry["version"], entry["author"], entry["message"]) == (new_version, "pat", "on")
        back = c.post(f"{BASE}/rollback", json={"version": new_version - 1})
        assert back.status_code == 200 and back.json()["status"] == "ok", back.text
        server.wait_version(back.json()["version"])
        assert served(server, client_key, "banner") is False


def test_invalid_document_is_422_with_the_path_and_malformed_json_400(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    pat = admin_key(server, "pat", "propose")
    before = (version(redis, ENV), log_length(redis, ENV))
    bad = {"flags": {"banner": {**ON, "defaultVariant": "nope"}}}
    with as_(server, pat) as c:
        r = c.put(f"{BASE}/document", json={"document": bad})
        assert r.status_code == 422, r.text
        assert r.json()["errorCode"] == "INVALID_DOCUMENT"
        assert any(p["path"].startswith("document: flags.banner")
                   for p in r.json()["problems"]), r.json()
        broken = c.put(f"{BASE}/document", content=b'{"document": ',
                       headers={"content-type": "application/json"})
        assert broken.status_code == 400 and broken.json()["errorCode"] == "PARSE_ERROR"
        no_doc = c.put(f"{BASE}/document", json={"message": "x"})
        assert no_doc.status_code == 400 and "document" in no_doc.json()["errorDetails"]
        wrong = c.patch(f"{BASE}/flags/banner", json={"op": "default", "variant": "nope"})
        assert wrong.status_code == 422 and "no variant 'nope'" in wrong.json()["errorDetails"]
    assert (version(redis, ENV), log_length(redis, ENV)) == before
