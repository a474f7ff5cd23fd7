"""The admin HTTP API for release control (DESIGN §10, issue 23): the CLI's flows over HTTP,
with admin keys of different roles, against a real `flagedge serve` and redis-server. Each
refusal is checked to have written nothing (version, change log, requests as stored)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from proxy.storage import keys as stored_keys
from tests.integration import release_support as rel
from tests.integration.conftest import ProxyServer
from tests.integration.webhook_receiver import Receiver, verify
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

ENV = "test"
BASE = f"/v1/admin/envs/{ENV}"
DOC = {"flags": {"banner": rel.OFF, "checkout": rel.ON}}


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
    out = rel.flagedge("envs", "protect", ENV, "--approvals", str(approvals),
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
    before = (rel.version(redis, ENV), rel.log_length(redis, ENV))
    new_doc = {"flags": {"banner": rel.ON, "checkout": rel.ON}}
    with as_(server, ann) as c:
        refused = c.put(f"{BASE}/document", json={"document": new_doc, "message": "go"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["errorCode"] == "APPROVAL_REQUIRED"
        assert refused.json()["next"] == f"POST {BASE}/requests"
        # Nothing written:
        assert (rel.version(redis, ENV), rel.log_length(redis, ENV)) == before
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
    assert rel.stored_request(redis, ENV, request_id)["state"] == "applied"
    entry = httpx.get(f"{server.url}{BASE}/history", params={"limit": 1},
                      headers={"Authorization": f"Bearer {bob}"}).json()[0]
    assert (entry["version"], entry["author"], entry["request"], entry["approvers"]) == (
        applied_version, "ann", request_id, ["bob"])
    # One audit line per write, naming the person and the key id, never the key.
    logs = server.logs()
    assert "admin write by ann" in logs and "admin write by bob" in logs
    assert ann not in logs and bob not in logs


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
    assert rel.stored_request(server.redis_client, ENV, request_id)["approvals"] == []


def test_a_view_key_reads_everything_and_every_write_is_403_naming_the_role(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    vic = admin_key(server, "vic", "view")
    before = (rel.version(redis, ENV), rel.log_length(redis, ENV))
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
    assert (rel.version(redis, ENV), rel.log_length(redis, ENV)) == before
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
        new_doc = {"flags": {"banner": rel.ON, "checkout": rel.ON}}
        preview = c.post(f"{BASE}/preview", json={"document": new_doc}).json()
        assert list(preview["diff"]["changed"]) == ["banner"]
        assert [i["flag"] for i in preview["impact"]] == ["banner"]
        assert rel.version(redis, ENV) == int(etag.strip('"'))  # a preview writes nothing
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
    before = (rel.version(redis, ENV), rel.log_length(redis, ENV))
    bad = {"flags": {"banner": {**rel.ON, "defaultVariant": "nope"}}}
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
    assert (rel.version(redis, ENV), rel.log_length(redis, ENV)) == before


def test_reject_needs_a_reason_and_cancel_is_the_authors(served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    protect(server)
    ann = admin_key(server, "ann", "propose")
    bob = admin_key(server, "bob", "approve")
    change = {"change": {"flag": "banner", "op": "default", "variant": "on"}, "message": "m"}
    with as_(server, ann) as c:
        first = c.post(f"{BASE}/requests", json=change).json()["id"]
        second = c.post(f"{BASE}/requests", json=change).json()["id"]
    with as_(server, bob) as c:
        assert c.post(f"{BASE}/requests/{first}/reject", json={}).status_code == 400
        assert c.post(f"{BASE}/requests/{first}/cancel").status_code == 403  # not its author
        rejected = c.post(f"{BASE}/requests/{first}/reject", json={"reason": "not now"})
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["reason"] == "rejected by bob: not now"
        again = c.post(f"{BASE}/requests/{first}/approve")
        assert again.status_code == 409 and again.json()["errorCode"] == "NOT_OPEN"
    with as_(server, ann) as c:
        assert c.post(f"{BASE}/requests/{second}/cancel").json()["state"] == "cancelled"
        assert c.get(f"{BASE}/requests").json() == []  # open ones
        states = {r["id"]: r["state"] for r in c.get(f"{BASE}/requests",
                                                     params={"state": "all"}).json()}
    assert states == {first: "rejected", second: "cancelled"}
    assert rel.stored_flag(redis, ENV, "banner") == rel.OFF


def test_a_proposal_from_a_stale_version_is_409_and_nothing_is_proposed(
        served_doc: ProxyServer) -> None:
    server = served_doc
    protect(server)
    ann = admin_key(server, "ann", "propose")
    live = int(server.redis_client.hget(f"flagedge:{{{ENV}}}:meta", "version"))
    change = {"change": {"flag": "banner", "op": "default", "variant": "on"}, "message": "m"}
    with as_(server, ann) as c:
        stale = c.post(f"{BASE}/requests", json={**change, "base_version": live - 1})
        assert stale.status_code == 409, stale.text
        assert (stale.json()["errorCode"], stale.json()["version"]) == ("CONFLICT", live)
        assert c.get(f"{BASE}/requests", params={"state": "all"}).json() == []
        current = c.post(f"{BASE}/requests", json={**change, "base_version": live})
        assert current.status_code == 201 and current.json()["base_version"] == live


def test_kill_by_a_kill_key_applies_at_once_and_is_marked(served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    protect(server)
    kim = admin_key(server, "kim", "kill")
    pam = admin_key(server, "pam", "propose")
    client_key = server.create_key("client")
    with as_(server, pam) as c:  # without the kill role: the request it would apply
        asked = c.patch(f"{BASE}/flags/checkout", json={"op": "disable", "message": "why"})
        assert asked.status_code == 202, asked.text
        assert asked.json()["status"] == "proposed"
        assert asked.json()["request"]["author"] == "pam"
    assert rel.stored_flag(redis, ENV, "checkout")["state"] == "ENABLED"
    with as_(server, kim) as c:
        killed = c.patch(f"{BASE}/flags/checkout", json={"op": "disable", "message": "incident"})
        assert killed.status_code == 200, killed.text
        assert killed.json()["marks"] == ["kill"]
        server.wait_version(killed.json()["version"])
        assert served(server, client_key, "checkout") != rel.ON["variants"]["on"]
        entry = c.get(f"{BASE}/history").json()[0]
        assert (entry["kill"], entry["author"], entry["message"]) == (True, "kim", "incident")
        # Not a kill operation: kim holds no propose role.
        other = c.patch(f"{BASE}/flags/banner", json={"op": "default", "variant": "on"})
        assert other.status_code == 403 and "propose role" in other.json()["errorDetails"]


def test_break_glass_needs_manage_and_a_message(served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    protect(server)
    max_ = admin_key(server, "max", "manage")
    pam = admin_key(server, "pam", "propose")
    new_doc = {"document": {"flags": {"banner": rel.ON, "checkout": rel.ON}},
               "break_glass": True}
    before = rel.version(redis, ENV)
    with as_(server, pam) as c:
        no = c.put(f"{BASE}/document", json={**new_doc, "message": "please"})
        assert no.status_code == 403 and "manage role" in no.json()["errorDetails"]
    with as_(server, max_) as c:
        silent = c.put(f"{BASE}/document", json=new_doc)
        assert silent.status_code == 403 and "needs a reason" in silent.json()["errorDetails"]
        assert rel.version(redis, ENV) == before
        done = c.put(f"{BASE}/document", json={**new_doc, "message": "outage"})
        assert done.status_code == 200, done.text
        assert done.json()["marks"] == ["break_glass"]
        entry = c.get(f"{BASE}/history").json()[0]
    assert (entry["break_glass"], entry["author"], entry["message"]) == (True, "max", "outage")
    assert rel.stored_flag(redis, ENV, "banner") == rel.ON


def test_policy_and_webhooks_by_a_manage_key(served_doc: ProxyServer) -> None:
    server = served_doc
    max_ = admin_key(server, "max", "manage")
    with as_(server, max_) as c:
        assert c.get(f"{BASE}/policy").json() == {"protected": False, "approvals": 0,
                                                  "approvers": []}
        never = c.put(f"{BASE}/policy", json={"approvals": 2, "approvers": ["ann"]})
        assert never.status_code == 422 and "never be met" in never.json()["errorDetails"]
        set_ = c.put(f"{BASE}/policy", json={"approvals": 1, "approvers": ["bob", "ann"]})
        assert set_.json() == {"protected": True, "approvals": 1, "approvers": ["ann", "bob"]}
        assert c.get("/v1/admin/envs").json()["envs"][0]["policy"]["protected"] is True
        unsafe = c.post(f"{BASE}/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert unsafe.status_code == 422 and "SSRF" in unsafe.json()["errorDetails"]
        added = c.post(f"{BASE}/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                                 "allow_private": True, "format": "slack"})
        assert added.status_code == 201, added.text
        hook = added.json()
        assert hook["secret"].startswith("whsec_") and hook["created_by"] == "max"
        listed = c.get(f"{BASE}/webhooks").json()
        assert [h["id"] for h in listed] == [hook["id"]]
        assert "secret" not in listed[0]  # shown once, at creation
        assert c.get(f"{BASE}/webhooks/failed").json() == []
        assert c.delete(f"{BASE}/webhooks/{hook['id']}").status_code == 200
        assert c.get(f"{BASE}/webhooks").json() == []
        assert c.delete(f"{BASE}/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_a_test_delivery_is_signed_and_reports_what_the_receiver_answered(
        served_doc: ProxyServer, fmt: str) -> None:
    server = served_doc
    max_ = admin_key(server, "max", "manage")
    vic = admin_key(server, "vic", "view")
    receiver = Receiver().start()
    try:
        with as_(server, max_) as c:
            hook = c.post(f"{BASE}/webhooks", json={"url": receiver.url, "format": fmt,
                                                    "allow_private": True}).json()
            sent = c.post(f"{BASE}/webhooks/{hook['id']}/test")
            assert sent.status_code == 200, sent.text
            assert (sent.json()["delivered"], sent.json()["status"]) == (True, 200)
            (got,) = receiver.all()
            assert verify(hook["secret"], got.headers, got.body)
            text = got.json["text"] if fmt == "slack" else got.json["data"]["by"]
            assert "max" in text
            if fmt == "json":
                assert got.json["type"] == "webhook.test"
            receiver.always_fail = True
            failed = c.post(f"{BASE}/webhooks/{hook['id']}/test").json()
            assert (failed["delivered"], failed["status"], failed["error"]) == (
                False, 500, "HTTP 500")
            assert c.post(f"{BASE}/webhooks/wh_000000000000/test").status_code == 404
            assert c.get(f"{BASE}/webhooks/failed").json() == []  # nothing stored
        with as_(server, vic) as c:
            refused = c.post(f"{BASE}/webhooks/{hook['id']}/test")
            assert refused.status_code == 403 and "manage" in refused.json()["errorDetails"]
        assert len(receiver.all()) == 2  # the view key's attempt sent nothing
    finally:
        receiver.stop()


def test_keys_are_shown_once_and_a_revoked_key_is_refused_at_once(
        served_doc: ProxyServer) -> None:
    server = served_doc
    max_ = admin_key(server, "max", "manage")
    stored_keys.create(server.redis_client, "other", "admin", "otto")  # not listed here
    with as_(server, max_) as c:
        created = c.post("/v1/admin/keys", json={"kind": "admin", "name": "newbie",
                                                 "roles": ["view"]})
        assert created.status_code == 201, created.text
        new_key, key_id = created.json()["key"], created.json()["id"]
        assert new_key.startswith("fe_admin_") and created.json()["roles"] == ["view"]
        listed = c.get("/v1/admin/keys").json()
        assert {k["name"] for k in listed} == {"max", "newbie"}
        assert all("key" not in k for k in listed)  # the secret never again
        bad_role = c.post("/v1/admin/keys", json={"kind": "admin", "name": "x",
                                                  "roles": ["boss"]})
        assert bad_role.status_code == 422 and "boss" in bad_role.json()["errorDetails"]
    wait_until(lambda: server.key_works(new_key), timeout=10, what="the new key")
    with as_(server, new_key) as c:
        assert c.get(f"{BASE}/document").status_code == 200
    with as_(server, max_) as c:
        assert c.delete(f"/v1/admin/keys/{key_id}").status_code == 200
    with as_(server, new_key) as c:  # no waiting: this proxy forgot it with the answer
        assert c.get(f"{BASE}/document").status_code == 401
    with as_(server, max_) as c:
        assert c.delete(f"/v1/admin/keys/{key_id}").status_code == 404


def test_with_an_admin_port_the_admin_routes_answer_there_and_not_on_the_main_port(
        proxy_factory: Any) -> None:
    from tests.redis_server import free_port

    admin_port = free_port()
    server = proxy_factory(extra_args=["--admin-port", str(admin_port)])
    server.push(DOC, wait=False)  # the routes read Redis; the public /readyz lists no envs
    vic = admin_key(server, "vic", "view")
    headers = {"Authorization": f"Bearer {vic}"}
    wait_until(lambda: _answers(f"http://127.0.0.1:{admin_port}/healthz"), timeout=10,
               what="the admin port")
    there = httpx.get(f"http://127.0.0.1:{admin_port}{BASE}/document", headers=headers)
    assert there.status_code == 200 and "banner" in there.json()["flags"]
    main = httpx.get(f"{server.url}{BASE}/document", headers=headers)
    assert main.status_code == 404 and main.json()["errorCode"] == "NOT_FOUND"
    # insights are admin routes too: there, not on the main port
    insights = "/v1/admin/insights/flags"
    assert httpx.get(f"http://127.0.0.1:{admin_port}{insights}",
                     headers=headers).status_code == 200
    assert httpx.get(f"{server.url}{insights}", headers=headers).status_code == 404


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_no_auth_callers_are_trusted_operators(proxy_factory: Any) -> None:
    server = proxy_factory(extra_args=["--no-auth"])
    server.push(DOC)
    with server.client() as c:
        r = c.patch(f"{BASE}/flags/banner", json={"op": "default", "variant": "on"})
        assert r.status_code == 200, r.text
        assert c.get(f"{BASE}/history").json()[0]["author"] == "no-auth"
        assert c.get("/v1/admin/envs/other/document").status_code == 403


def test_rollouts_start_status_pause_and_abort_with_their_roles(served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    pam = admin_key(server, "pam", "view", "propose")
    vic = admin_key(server, "vic", "view")
    kim = admin_key(server, "kim", "view", "kill")
    start = {"variant": "on", "steps": [10, 50, 100], "every": "1h", "message": "ramp"}
    with as_(server, vic) as c:
        refused = c.post(f"{BASE}/rollouts/banner", json=start)
        assert refused.status_code == 403 and "propose role" in refused.json()["errorDetails"]
    assert redis.hlen(f"flagedge:{{{ENV}}}:rollouts") == 0
    with as_(server, pam) as c:
        bad = c.post(f"{BASE}/rollouts/banner", json={**start, "steps": [50, 10]})
        assert bad.status_code == 422, bad.text
        never = c.post(f"{BASE}/rollouts/banner", json={**start, "every": 0})
        assert never.status_code == 422 and "every" in never.json()["errorDetails"], never.text
        assert c.post(f"{BASE}/rollouts/nope", json=start).status_code == 404
        started = c.post(f"{BASE}/rollouts/banner", json=start)
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "ok"
        server.wait_version(started.json()["version"])
        status = c.get(f"{BASE}/rollouts/banner").json()
        assert (status["state"], status["step"], status["percent"]) == ("running", 1, 10)
        assert [r["flag"] for r in c.get(f"{BASE}/rollouts").json()] == ["banner"]
    protect(server)  # from here a pause or an abort applies at once only for a kill holder
    with as_(server, pam) as c:
        asked = c.post(f"{BASE}/rollouts/banner/pause", json={"message": "errors up"})
        assert asked.status_code == 202, asked.text
        assert c.get(f"{BASE}/rollouts/banner").json()["state"] == "running"
    with as_(server, kim) as c:
        paused = c.post(f"{BASE}/rollouts/banner/pause", json={"message": "errors up"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["marks"] == ["kill"]
        assert c.get(f"{BASE}/rollouts/banner").json()["state"] == "paused"
        aborted = c.post(f"{BASE}/rollouts/banner/abort", json={})
        assert aborted.status_code == 200, aborted.text
        assert rel.stored_flag(redis, ENV, "banner").get("targeting") is None
        entry = c.get(f"{BASE}/history").json()[0]
        assert (entry["author"], entry["kill"]) == ("kim", True)


def test_a_rollout_started_in_a_protected_environment_is_a_request(
        served_doc: ProxyServer) -> None:
    server, redis = served_doc, served_doc.redis_client
    protect(server)
    pam = admin_key(server, "pam", "propose")
    version = rel.version(redis, ENV)
    with as_(server, pam) as c:
        asked = c.post(f"{BASE}/rollouts/banner", json={
            "variant": "on", "steps": [10, 100], "every": 3600, "message": "ramp"})
        assert asked.status_code == 202, asked.text
        request = asked.json()["request"]
        assert (request["state"], request["author"]) == ("open", "pam")
    assert "targeting" not in rel.stored_flag(redis, ENV, "banner")
    assert redis.hlen(f"flagedge:{{{ENV}}}:rollouts") == 0
    assert rel.version(redis, ENV) == version
