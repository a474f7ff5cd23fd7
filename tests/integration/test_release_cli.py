"""Release control through the CLI (DESIGN §10), `python -m proxy ...` subprocesses against
a real redis-server: protect, the refused push (exit 7), propose -> approve -> applied,
reject, cancel, expiry, conflict, kill and break-glass marks, roles on keys, --json."""

from __future__ import annotations

import orjson
import pytest
import redis

from tests.integration.release_support import (
    OFF,
    ON,
    doc_file,
    flagedge,
    log_length,
    stored_flag,
    stored_request,
    version,
)
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


def publisher_history(url: str) -> list[dict]:
    return orjson.loads(flagedge("history", "--env", "prod", "--json", url=url).stdout)


@pytest.fixture
def prod(redis_server, tmp_path):
    """`prod` at version 1 (flags a, b on), protected with 1 approval; yields (url, client)."""
    url = redis_server.url
    assert flagedge("push", doc_file(tmp_path, "v1.json", {"a": ON, "b": ON}), "--env", "prod",
                    url=url).returncode == 0
    r = flagedge("envs", "protect", "prod", "--approvals", "1", url=url)
    assert r.returncode == 0, r.stderr
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def test_protected_push_is_refused_with_exit_7_and_writes_nothing(prod, tmp_path):
    url, client = prod
    before = (version(client, "prod"), log_length(client, "prod"))
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    r = flagedge("push", new, "--env", "prod", "-m", "flip", url=url)
    assert r.returncode == 7, r.stderr
    assert "approval required: use flagedge propose" in r.stderr
    assert (version(client, "prod"), log_length(client, "prod")) == before
    assert stored_flag(client, "prod", "a") == ON
    assert flagedge("push", new, "--env", "prod", "--dry-run", url=url).returncode == 0
    listed = orjson.loads(flagedge("envs", "list", "--json", url=url).stdout)
    assert listed[0]["policy"] == {"protected": True, "approvals": 1, "approvers": []}
    assert "1 approval" in flagedge("envs", "list", url=url).stdout
    assert flagedge("envs", "unprotect", "prod", url=url).returncode == 0
    assert flagedge("push", new, "--env", "prod", url=url).returncode == 0
    assert stored_flag(client, "prod", "a") == OFF


def test_propose_approve_applies_with_author_approvers_and_request_in_history(prod, tmp_path):
    url, client = prod
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON, "c": ON})
    r = flagedge("propose", new, "--env", "prod", "-m", "flip a, add c", "--json", url=url,
                 author="ann")
    assert r.returncode == 0, r.stderr
    proposed = orjson.loads(r.stdout)
    assert set(proposed) >= {"id", "state", "base_version", "author", "message", "created_at",
                             "expires_at", "change", "content_hash", "preview", "approvals"}
    assert (proposed["state"], proposed["author"], proposed["base_version"]) == ("open", "ann", 1)
    assert proposed["change"]["after"]["flags"] == {"a": OFF, "c": ON}
    assert proposed["expires_at"] - proposed["created_at"] == pytest.approx(7 * 86400)
    assert [i["flag"] for i in proposed["preview"]["impact"]] == ["a", "c"]
    rid = str(proposed["id"])
    assert version(client, "prod") == 1
    listed = orjson.loads(flagedge("requests", "list", "--env", "prod", "--json", url=url).stdout)
    assert [x["id"] for x in listed] == [proposed["id"]]
    r = flagedge("approve", rid, "--env", "prod", url=url, author="ann")
    assert r.returncode == 10 and "may not approve" in r.stderr
    assert version(client, "prod") == 1
    r = flagedge("approve", rid, "--env", "prod", "--json", url=url, author="bob")
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert (out["status"], out["version"]) == ("applied", 2)
    shown = orjson.loads(flagedge("requests", "show", rid, "--env", "prod", "--json",
                                  url=url).stdout)
    assert (shown["state"], shown["applied_version"]) == ("applied", 2)
    assert [a["by"] for a in shown["approvals"]] == ["bob"]
    assert shown["approvals"][0]["content_hash"] == shown["content_hash"] == \
        proposed["content_hash"]
    history = orjson.loads(flagedge("history", "--env", "prod", "--json", url=url).stdout)
    assert (history[0]["version"], history[0]["author"], history[0]["message"]) == (
        2, "ann", "flip a, add c")
    assert (history[0]["request"], history[0]["approvers"]) == (proposed["id"], ["bob"])
    assert "[request 1, approved by bob]" in flagedge("history", "--env", "prod", url=url).stdout
    assert stored_flag(client, "prod", "a") == OFF and stored_flag(client, "prod", "c") == ON
    r = flagedge("approve", rid, "--env", "prod", url=url, author="carol")
    assert r.returncode == 3 and "is applied" in r.stderr
    assert flagedge("requests", "list", "--env", "prod", url=url).stdout.startswith("no open")
    assert "applied" in flagedge("requests", "list", "--env", "prod", "--all", url=url).stdout
    text = flagedge("requests", "show", rid, "--env", "prod", url=url).stdout
    assert "applied as version 2" in text and "approved by bob" in text


def test_quorum_of_two_and_the_policy_read_at_apply_time(prod, tmp_path):
    url, client = prod
    assert flagedge("envs", "protect", "prod", "--approvals", "2", url=url).returncode == 0
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    assert flagedge("propose", new, "--env", "prod", "-m", "x", url=url,
                    author="ann").stdout.endswith("request 1\n")
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0 and "1 of 2 approvals" in r.stdout
    assert version(client, "prod") == 1
    # the policy changes while the request waits: the apply reads it then
    assert flagedge("envs", "protect", "prod", "--approvals", "1", url=url).returncode == 0
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0 and "applied: prod version 2" in r.stdout, r.stdout + r.stderr


def test_approvers_list_limits_who_counts(prod, tmp_path):
    url, client = prod
    assert flagedge("envs", "protect", "prod", "--approvals", "1", "--approvers", "bob",
                    url=url).returncode == 0
    assert flagedge("envs", "protect", "prod", "--approvals", "2", "--approvers", "bob",
                    url=url).returncode == 2  # can never be met
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    flagedge("propose", new, "--env", "prod", "-m", "x", url=url, author="ann")
    r = flagedge("approve", "1", "--env", "prod", url=url, author="carol")
    assert r.returncode == 10 and "not an approver" in r.stderr
    assert flagedge("approve", "1", "--env", "prod", url=url, author="bob").returncode == 0
    assert version(client, "prod") == 2


def test_reject_and_cancel_close_requests_and_write_nothing(prod, tmp_path):
    url, client = prod
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    for _ in range(2):
        assert flagedge("propose", new, "--env", "prod", "-m", "x", url=url,
                        author="ann").returncode == 0
    assert flagedge("reject", "1", "--env", "prod", url=url, author="bob").returncode == 2
    r = flagedge("reject", "1", "--env", "prod", "-m", "not now", url=url, author="bob")
    assert r.returncode == 0, r.stderr
    assert stored_request(client, "prod", 1)["state"] == "rejected"
    assert stored_request(client, "prod", 1)["reason"] == "rejected by bob: not now"
    r = flagedge("cancel", "2", "--env", "prod", url=url, author="ann")
    assert r.returncode == 0 and "request 2 cancelled" in r.stdout
    for rid in ("1", "2"):
        r = flagedge("approve", rid, "--env", "prod", url=url, author="bob")
        assert r.returncode == 3, r.stderr
    assert version(client, "prod") == 1 and log_length(client, "prod") == 1
    assert flagedge("cancel", "9", "--env", "prod", url=url).returncode == 5


def test_an_expired_request_is_never_applied(prod, tmp_path):
    url, client = prod
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    r = flagedge("propose", new, "--env", "prod", "-m", "x", "--expires", "1s", "--json",
                 url=url, author="ann")
    expires_at = orjson.loads(r.stdout)["expires_at"]

    def redis_now() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    wait_until(lambda: redis_now() > expires_at, timeout=5, what="Redis' clock past expiry")
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 3 and "expired" in r.stderr
    stored = stored_request(client, "prod", 1)
    assert stored["state"] == "expired" and stored["approvals"] == []
    assert stored["reason"].startswith("expired at ")
    assert version(client, "prod") == 1 and stored_flag(client, "prod", "a") == ON


def test_propose_expires_overdue_requests_of_its_environment(prod, tmp_path):
    url, client = prod
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    r = flagedge("propose", new, "--env", "prod", "-m", "x", "--expires", "1s", "--json",
                 url=url, author="ann")
    expires_at = orjson.loads(r.stdout)["expires_at"]
    text = flagedge("requests", "show", "1", "--env", "prod", url=url).stdout
    assert "request 1 in prod: open\n" in text

    def redis_now() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    wait_until(lambda: redis_now() > expires_at, timeout=5, what="Redis' clock past expiry")
    text = flagedge("requests", "show", "1", "--env", "prod", url=url).stdout
    assert "open (past its expiry" in text
    assert stored_request(client, "prod", 1)["state"] == "open"  # a read writes nothing
    assert flagedge("propose", new, "--env", "prod", "-m", "again", url=url,
                    author="ann").returncode == 0
    assert stored_request(client, "prod", 1)["state"] == "expired"
    assert stored_request(client, "prod", 2)["state"] == "open"


def test_a_conflicting_request_writes_nothing_and_names_what_moved(prod, tmp_path):
    url, client = prod
    flagedge("propose", doc_file(tmp_path, "a.json", {"a": OFF, "b": ON}), "--env", "prod",
             "-m", "a off", url=url, author="ann")
    b_off = doc_file(tmp_path, "b.json", {"a": ON, "b": OFF})
    flagedge("propose", b_off, "--env", "prod", "-m", "b off", url=url, author="ann")
    # someone changes a meanwhile (break-glass)
    moved = {**ON, "variants": {"on": True, "off": False, "x": True}}
    r = flagedge("push", doc_file(tmp_path, "m.json", {"a": moved, "b": ON}), "--env", "prod",
                 "--break-glass", "-m", "hotfix", url=url)
    assert r.returncode == 0, r.stderr
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 3 and "conflict" in r.stderr and "flag a" in r.stderr
    assert stored_request(client, "prod", 1)["state"] == "conflict"
    assert "flag a" in stored_request(client, "prod", 1)["reason"]
    assert version(client, "prod") == 2 and stored_flag(client, "prod", "a") == moved
    # request 2 touches only b: it applies on top, keeping the hotfix to a
    r = flagedge("approve", "2", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0, r.stderr
    assert stored_flag(client, "prod", "a") == moved and stored_flag(client, "prod", "b") == OFF


def test_rollback_is_a_marked_kill_and_break_glass_is_marked(prod, tmp_path):
    url, client = prod
    r = flagedge("push", doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON}), "--env", "prod",
                 "--break-glass", url=url)
    assert r.returncode == 10 and "needs a reason" in r.stderr
    assert version(client, "prod") == 1
    r = flagedge("push", doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON}), "--env", "prod",
                 "--break-glass", "-m", "incident 42", url=url)
    assert r.returncode == 0, r.stderr
    r = flagedge("rollback", "--env", "prod", "--to", "1", url=url)
    assert r.returncode == 0 and "version 3 equals version 1" in r.stdout, r.stderr
    r = flagedge("rollback", "--env", "prod", "--to", "2", "--propose", url=url, author="ann")
    assert r.returncode == 0 and r.stdout.endswith("request 1\n")
    assert version(client, "prod") == 3
    history = orjson.loads(flagedge("history", "--env", "prod", "--json", url=url).stdout)
    assert [(h["version"], h["kill"], h["break_glass"]) for h in history] == [
        (3, True, False), (2, False, True), (1, False, False)]
    text = flagedge("history", "--env", "prod", url=url).stdout
    assert "[kill]" in text and "[break-glass]" in text and '"incident 42"' in text
    assert flagedge("approve", "1", "--env", "prod", url=url, author="bob").returncode == 0
    assert stored_flag(client, "prod", "a") == OFF and version(client, "prod") == 4
    r = flagedge("rollback", "--env", "prod", "--to", "1", "--break-glass", "-m", "sev1",
                 url=url)
    assert r.returncode == 0, r.stderr
    newest = publisher_history(url)[0]
    assert (newest["version"], newest["break_glass"], newest["kill"]) == (5, True, False)


def test_unprotected_writes_are_not_marked(redis_server, tmp_path):
    url = redis_server.url
    flagedge("push", doc_file(tmp_path, "v1.json", {"a": ON}), "--env", "dev", url=url)
    flagedge("push", doc_file(tmp_path, "v2.json", {"a": OFF}), "--env", "dev", url=url)
    assert flagedge("rollback", "--env", "dev", "--to", "1", url=url).returncode == 0
    history = orjson.loads(flagedge("history", "--env", "dev", "--json", url=url).stdout)
    assert not any(h["kill"] or h["break_glass"] or h["request"] for h in history)


def test_keys_with_roles(redis_server):
    url = redis_server.url
    r = flagedge("keys", "create", "--env", "prod", "--kind", "admin", "--name", "ann",
                 "--roles", "propose,approve", "--json", url=url)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["roles"] == ["approve", "propose"]
    assert flagedge("keys", "create", "--env", "prod", "--kind", "admin", "--name", "root",
                    url=url).returncode == 0
    r = flagedge("keys", "create", "--env", "prod", "--kind", "client", "--name", "web",
                 "--roles", "view", url=url)
    assert r.returncode == 1 and "roles are for admin keys" in r.stderr
    r = flagedge("keys", "create", "--env", "prod", "--kind", "admin", "--name", "x",
                 "--roles", "deploy", url=url)
    assert r.returncode == 1 and "unknown role 'deploy'" in r.stderr
    listed = {k["name"]: k["roles"] for k in orjson.loads(
        flagedge("keys", "list", "--json", url=url).stdout)}
    assert listed == {"ann": ["propose", "approve"],
                      "root": ["view", "propose", "approve", "kill", "manage"]}
    text = flagedge("keys", "list", url=url).stdout
    assert "ROLES" in text and "propose,approve" in text


def test_switching_hashing_in_a_protected_environment_needs_break_glass(prod, tmp_path):
    url, client = prod
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes", url=url)
    assert r.returncode == 7 and "use --break-glass -m WHY" in r.stderr, r.stderr
    assert version(client, "prod") == 1
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes", "--break-glass",
                 "-m", "providers moved to 0.6", url=url)
    assert r.returncode == 0, r.stderr
    history = orjson.loads(flagedge("history", "--env", "prod", "--json", url=url).stdout)
    assert (history[0]["fractional_hash"], history[0]["break_glass"]) == ("v3", True)
    # a request in a v3 environment keeps its hashing: the applied change writes flags only
    new = doc_file(tmp_path, "v2.json", {"a": {**ON, "targeting": {"fractional": [
        ["on", 50], ["off", 50]]}}, "b": ON})
    assert flagedge("propose", new, "--env", "prod", "-m", "half", url=url,
                    author="ann").returncode == 0
    assert flagedge("approve", "1", "--env", "prod", url=url, author="bob").returncode == 0
    assert client.hget("flagedge:{prod}:meta", "fractional_hash") == b"v3"
    assert version(client, "prod") == 3


def test_an_edit_is_a_new_request_that_needs_new_approvals(prod, tmp_path):
    url, client = prod
    assert flagedge("envs", "protect", "prod", "--approvals", "2", url=url).returncode == 0
    first = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    flagedge("propose", first, "--env", "prod", "-m", "a off", url=url, author="ann")
    assert flagedge("approve", "1", "--env", "prod", url=url, author="bob").returncode == 0
    edited = doc_file(tmp_path, "v3.json", {"a": OFF, "b": OFF})
    r = flagedge("propose", edited, "--env", "prod", "-m", "a and b off", "--supersedes", "1",
                 url=url, author="ann")
    assert r.returncode == 0 and r.stdout.endswith("request 1 superseded (cancelled)\n"
                                                   "request 2\n"), r.stdout + r.stderr
    old = stored_request(client, "prod", 1)
    assert (old["state"], old["reason"]) == ("cancelled", "superseded by request 2")
    assert stored_request(client, "prod", 2)["approvals"] == []
    r = flagedge("approve", "2", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0 and "1 of 2 approvals" in r.stdout
    r = flagedge("propose", edited, "--env", "prod", "-m", "x", "--supersedes", "1", url=url,
                 author="ann")
    assert r.returncode == 3 and "request 1 is cancelled" in r.stderr
    assert len(client.hkeys("flagedge:{prod}:requests")) == 2  # nothing created
    assert version(client, "prod") == 1


def test_at_is_stored_as_apply_at_and_an_approved_request_waits_for_it(prod, tmp_path):
    """Applying due requests is the release worker's job (not built yet): approve keeps an
    approved request open until its time, and applies it when approved again once due."""
    url, client = prod
    new = doc_file(tmp_path, "v2.json", {"a": OFF, "b": ON})
    r = flagedge("propose", new, "--env", "prod", "-m", "later", "--at", "+2s", "--json",
                 url=url, author="ann")
    assert r.returncode == 0, r.stderr
    proposed = orjson.loads(r.stdout)
    assert proposed["apply_at"] == pytest.approx(proposed["created_at"] + 2, abs=0.01)
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0 and "release worker" in r.stdout, r.stdout + r.stderr
    stored = stored_request(client, "prod", 1)
    assert stored["state"] == "open" and [a["by"] for a in stored["approvals"]] == ["bob"]
    assert version(client, "prod") == 1

    def redis_now() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    wait_until(lambda: redis_now() >= proposed["apply_at"], timeout=5, what="apply_at")
    r = flagedge("approve", "1", "--env", "prod", url=url, author="bob")
    assert r.returncode == 0 and "applied: prod version 2" in r.stdout, r.stdout + r.stderr
    r = flagedge("propose", new, "--env", "prod", "-m", "x", "--at", "tomorrow", url=url)
    assert r.returncode == 1 and "ISO 8601" in r.stderr
