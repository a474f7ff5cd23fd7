"""The release worker (DESIGN §10) in real `flagedge serve` processes against a real
redis-server: a scheduled, approved request is applied within a second of its due time and
not before; several serves racing apply each request once; a serve down at the due time
applies it when it comes back; `--no-release-worker` applies nothing; overdue requests
expire. Due-ness is judged by Redis' clock, so the tests read it too."""

from __future__ import annotations

import re

import orjson
import pytest
import redis

from tests.integration.release_support import (
    OFF,
    ON,
    doc_file,
    flagedge,
    log_length,
    stored_request,
    version,
)
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def history(url: str, env: str = "test") -> list[dict]:
    r = flagedge("history", "--env", env, "--json", url=url)
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)


@pytest.fixture
def protected(redis_server, tmp_path):
    """`test` at version 1 (flags f0..f4 on), protected with 1 approval; (url, client)."""
    url = redis_server.url
    flags = {f"f{i}": ON for i in range(5)}
    assert flagedge("push", doc_file(tmp_path, "v1.json", flags), "--env", "test",
                    url=url).returncode == 0
    assert flagedge("envs", "protect", "test", "--approvals", "1", url=url).returncode == 0
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def schedule(url: str, key: str, at: str) -> int:
    """`flag KEY --default off --at AT` by ann, approved by bob: a due-later request."""
    r = flagedge("flag", key, "--env", "test", "--default", "off", "--at", at, url=url,
                 author="ann")
    assert r.returncode == 0 and r.stdout.startswith("request "), r.stderr
    request_id = int(r.stdout.split()[1])
    a = flagedge("approve", str(request_id), "--env", "test", url=url, author="bob")
    assert a.returncode == 0 and "quorum met, due at" in a.stdout, (a.stdout, a.stderr)
    return request_id


def test_applied_within_a_second_of_due_and_not_before(protected, proxy_factory):
    url, client = protected
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    ofrep = proxy.client(None)
    try:
        request_id = schedule(url, "f0", "+4s")
        apply_at = stored_request(client, "test", request_id)["apply_at"]
        served_before = []

        def served_off() -> bool:
            value = ofrep.post("/ofrep/v1/evaluate/flags/f0", json={}).json()["value"]
            if value is True:
                served_before.append(redis_now(client))
            return value is False

        wait_until(served_off, timeout=10, interval=0.02, what="the scheduled change served")
        seen = redis_now(client)
        assert seen - apply_at < 1.0, f"served {seen - apply_at:.2f}s after due"
        assert served_before and max(served_before) > apply_at - 0.5, "applied early"
        entry = history(url)[0]
        assert entry["at"] >= apply_at, "written before it was due"
        assert entry["at"] - apply_at < 1.0
        assert entry["applied_by"] == "scheduler"
        assert (entry["author"], entry["approvers"], entry["request"]) == ("ann", ["bob"],
                                                                          request_id)
        assert stored_request(client, "test", request_id)["state"] == "applied"
        shown = flagedge("history", "--env", "test", url=url).stdout
        assert "[scheduler on behalf of ann]" in shown
    finally:
        ofrep.close()


def test_three_serves_racing_apply_each_request_once(protected, proxy_factory):
    _url, client = protected
    proxies = [proxy_factory(extra_args=["--no-auth"], wait="readyz") for _ in range(3)]
    ids = schedule_in_process(client, [f"f{i}" for i in range(5)], redis_now(client) + 2)
    start_version, start_log = version(client, "test"), log_length(client, "test")
    wait_until(lambda: all(stored_request(client, "test", i)["state"] == "applied"
                           for i in ids), timeout=10, what="every scheduled request applied")
    assert version(client, "test") == start_version + 5
    assert log_length(client, "test") == start_log + 5
    applied = sorted(stored_request(client, "test", i)["applied_version"] for i in ids)
    assert applied == list(range(start_version + 1, start_version + 6))
    for p in proxies:
        p.wait_version(start_version + 5)
    assert not client.zrange("flagedge:{test}:schedule", 0, -1), "index not tidied"


def test_a_serve_down_at_the_due_time_applies_it_on_return(protected, proxy_factory, tmp_path):
    url, client = protected
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    proxy.stop()
    r = flagedge("flag", "f0", "--env", "test", "--disable", url=url, author="ann")
    assert r.returncode == 0 and "[kill]" in r.stdout, r.stderr  # version 2: f0 disabled
    r = flagedge("rollback", "--env", "test", "--to", "1", "--at", "+4s", url=url, author="ann")
    assert r.returncode == 0 and r.stdout.strip().endswith("request 1"), r.stderr
    assert flagedge("approve", "1", "--env", "test", url=url, author="bob").returncode == 0
    apply_at = stored_request(client, "test", 1)["apply_at"]
    wait_until(lambda: redis_now(client) > apply_at + 1.5, timeout=10, what="due time passed")
    assert version(client, "test") == 2, "applied with no serve running"
    assert stored_request(client, "test", 1)["state"] == "open"
    proxy.restart(wait="readyz")
    wait_until(lambda: stored_request(client, "test", 1)["state"] == "applied", timeout=10,
               what="the returning serve applies the overdue request")
    assert version(client, "test") == 3
    assert history(url)[0]["applied_by"] == "scheduler"


def test_no_release_worker_applies_nothing(protected, proxy_factory, tmp_path):
    url, client = protected
    proxy_factory(extra_args=["--no-auth", "--no-release-worker"], wait="readyz")
    proxy_factory(extra_args=["--no-auth"], environ={"FLAGEDGE_RELEASE_WORKER": "false"},
                  wait="readyz")
    r = flagedge("propose", doc_file(tmp_path, "v2.json", {"f0": OFF}), "--env", "test",
                 "-m", "f0 off", "--at", "+4s", url=url, author="ann")
    assert r.returncode == 0 and r.stdout.endswith("request 1\n"), r.stderr
    a = flagedge("approve", "1", "--env", "test", url=url, author="bob")
    assert a.returncode == 0 and "quorum met, due at" in a.stdout, (a.stdout, a.stderr)
    request_id = 1
    apply_at = stored_request(client, "test", request_id)["apply_at"]
    wait_until(lambda: redis_now(client) > apply_at + 2, timeout=10, what="due time passed")
    assert stored_request(client, "test", request_id)["state"] == "open"
    assert version(client, "test") == 1
    proxy_factory(extra_args=["--no-auth"], wait="readyz")  # a worker: it was applicable
    wait_until(lambda: stored_request(client, "test", request_id)["state"] == "applied",
               timeout=10, what="applied by the serve that runs a worker")


def test_worker_expires_overdue_requests(protected, proxy_factory, tmp_path):
    url, client = protected
    r = flagedge("propose", doc_file(tmp_path, "v2.json", {"f0": OFF}), "--env", "test",
                 "-m", "x", "--expires", "1s", url=url, author="ann")
    assert r.returncode == 0, r.stderr
    expires_at = stored_request(client, "test", 1)["expires_at"]
    wait_until(lambda: redis_now(client) > expires_at, timeout=10, what="past its expiry")
    assert stored_request(client, "test", 1)["state"] == "open"
    proxy_factory(extra_args=["--no-auth"], wait="readyz")  # its first sweep expires it
    wait_until(lambda: stored_request(client, "test", 1)["state"] == "expired", timeout=10,
               what="the worker expires the overdue request")
    assert version(client, "test") == 1


def schedule_in_process(client: redis.Redis, keys: list[str], apply_at: float) -> list[int]:
    """One request per flag (default off), all due at ``apply_at``, each approved: made
    through the release API in this process, fast enough that none is due before the last
    is approved."""
    from proxy.release import publisher, review
    from proxy.release.authorization import Actor
    from proxy.release.changeset import Document, make_plan

    ids = []
    for key in keys:
        state = publisher.read_state(client, "test")
        current = state.document()
        new = Document({**current.flags, key: OFF}, current.evaluators, current.metadata)
        request = review.propose_plan(client, "test", state, make_plan(current, new),
                                      actor=Actor.cli("ann"), message=key, apply_at=apply_at)
        outcome = review.approve(client, "test", request.id, Actor.cli("bob"))
        assert outcome.status == "not_due", outcome
        ids.append(request.id)
    assert redis_now(client) < apply_at, "the test machine is too slow to schedule in time"
    return ids


def test_a_change_scheduled_where_no_approval_is_required_applies_when_due(redis_server,
                                                                           proxy_factory,
                                                                           tmp_path):
    """Unprotected: `flag --at` needs no approval (the same change made now needs none),
    while a plain `propose` there still waits for a reviewer."""
    url = redis_server.url
    assert flagedge("push", doc_file(tmp_path, "v1.json", {"f0": ON, "f1": ON}), "--env",
                    "test", url=url).returncode == 0
    proxy_factory(extra_args=["--no-auth"], wait="readyz")
    r = flagedge("flag", "f0", "--env", "test", "--disable", "--at", "+2s", url=url,
                 author="ann")
    assert r.returncode == 0 and r.stdout.startswith("request "), (r.stdout, r.stderr)
    request_id = int(r.stdout.split()[1])
    p = flagedge("propose", doc_file(tmp_path, "v2.json", {"f0": ON, "f1": OFF}), "--env",
                 "test", "-m", "review me", url=url, author="ann")
    assert p.returncode == 0, p.stderr
    proposed = int(re.search(r"^request (\d+)$", p.stdout, re.M).group(1))
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: stored_request(client, "test", request_id)["state"] == "applied",
                   timeout=10, what="the scheduled change applied without approvals")
        assert history(url)[0]["applied_by"] == "scheduler"
        assert stored_request(client, "test", proposed)["state"] == "open"
    finally:
        client.close()
