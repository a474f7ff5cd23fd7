"""The outbox (DESIGN §10) as the write side leaves it in a real redis-server: one entry per
applied change, written by the same script as the change (all or nothing), and one per
request state change; trimmed by time."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis

from proxy.release import publisher, review
from proxy.release.authorization import Actor
from proxy.release.requests import Request
from proxy.storage import policy
from tests.integration.release_support import OFF, ON, log_length, version
from tests.integration.test_release_apply import document
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration
OUTBOX = "flagedge:{prod}:outbox"


@pytest.fixture
def client(redis_server):
    """The write side's client (bytes replies, as the CLI's)."""
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture
def view(redis_server):
    """The test's reading client (text replies)."""
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    c.close()


def outbox(view: Any) -> list[dict[str, str]]:
    return [fields for _id, fields in view.xrange(OUTBOX)]


def test_each_change_is_in_the_outbox_as_in_the_change_log(client, view):
    publisher.push(client, "prod", document({"a": ON}), author="ann", message="first")
    publisher.push(client, "prod", document({"a": OFF}), author="bob", message="second")
    publisher.push(client, "prod", document({"a": OFF}))  # no change: nothing to tell
    log = view.xrange("flagedge:{prod}:changes")
    entries = outbox(view)
    assert len(entries) == 2 == len(log)
    for (log_id, change), entry in zip(log, entries, strict=True):
        assert entry["type"] == "change" and entry["change_id"] == log_id
        assert {k: v for k, v in entry.items() if k not in ("type", "change_id")} == change
    assert orjson.loads(entries[1]["after"])["flags"]["a"]["defaultVariant"] == "off"


def test_a_broken_outbox_refuses_the_write_and_nothing_is_written(client):
    publisher.push(client, "prod", document({"a": ON}))
    client.delete(OUTBOX)
    client.set(OUTBOX, "not a stream")
    with pytest.raises(redis.ResponseError, match=r"nothing written.*outbox is not a stream"):
        publisher.push(client, "prod", document({"a": OFF}))
    assert version(client, "prod") == 1 and log_length(client, "prod") == 1
    assert orjson.loads(client.hget("flagedge:{prod}:flags", "a"))["defaultVariant"] == "on"


def test_a_requests_life_is_in_the_outbox_in_the_same_scripts(client, view):
    publisher.push(client, "prod", document({"a": ON, "b": ON}))
    policy.write(client, "prod", policy.Policy(2))
    ann, bob, carl = (Actor.cli(n) for n in ("ann", "bob", "carl"))
    first = review.propose(client, "prod", document({"a": OFF, "b": ON}), actor=ann,
                           message="a off")
    review.approve(client, "prod", first.id, bob)
    review.approve(client, "prod", first.id, carl)
    second = review.propose(client, "prod", document({"a": ON, "b": ON}), actor=ann,
                            message="a on")
    review.reject(client, "prod", second.id, bob, "not now")
    third = review.propose(client, "prod", document({"a": ON, "b": ON}), actor=ann,
                           message="a on again")
    review.cancel(client, "prod", third.id, ann)
    stale = review.propose(client, "prod", document({"a": ON, "b": OFF}), actor=ann,
                           message="a on, b off")
    moved = review.propose(client, "prod", document({"a": ON, "b": ON}), actor=ann,
                           message="a on")
    review.approve(client, "prod", moved.id, bob)
    review.approve(client, "prod", moved.id, carl)  # applies: `a` moves under `stale`
    review.approve(client, "prod", stale.id, bob)
    assert review.approve(client, "prod", stale.id, carl).status == "conflict"
    expiring = review.propose(client, "prod", document({"a": OFF, "b": ON}), actor=ann,
                              message="soon stale", expires_in=0.2)
    wait_until(lambda: review.expire_due(client, "prod") == [expiring.id], timeout=5,
               what="the request past its expiry")
    got = [(f["type"], f.get("event"), f.get("request"), f.get("by")) for f in outbox(view)]
    assert got == [
        ("change", None, None, None),
        ("request", "proposed", "1", "ann"), ("request", "approved", "1", "bob"),
        ("change", None, "1", None),
        ("request", "proposed", "2", "ann"), ("request", "rejected", "2", "bob"),
        ("request", "proposed", "3", "ann"), ("request", "cancelled", "3", "ann"),
        ("request", "proposed", "4", "ann"), ("request", "proposed", "5", "ann"),
        ("request", "approved", "5", "bob"), ("change", None, "5", None),
        ("request", "approved", "4", "bob"), ("request", "conflict", "4", "carl"),
        ("request", "proposed", "6", "ann"), ("request", "expired", "6", ""),
    ]
    entries = outbox(view)
    applied = entries[3]
    assert orjson.loads(applied["approvers"]) == ["bob", "carl"] and applied["version"] == "2"
    for fields in entries:
        if fields["type"] == "request":  # the request as stored right after the event
            request = Request.from_json(fields["body"].encode())
            assert request.id == int(fields["request"])
    assert Request.from_json(entries[13]["body"].encode()).reason.startswith("moved since")


def test_the_outbox_is_trimmed_by_time_not_by_acknowledgement(client, view):
    old_ms = int(time.time() * 1000) - 8 * 86_400_000  # 8 days: past the 7 kept
    recent_ms = int(time.time() * 1000) - 86_400_000
    client.xadd(OUTBOX, {"type": "test"}, id=f"{old_ms}-0")
    client.xadd(OUTBOX, {"type": "test"}, id=f"{recent_ms}-0")
    client.xgroup_create(OUTBOX, "notify", id="0")
    client.xreadgroup("notify", "gone", {OUTBOX: ">"})  # both pending, never acknowledged
    publisher.push(client, "prod", document({"a": ON}))
    ids = [i for i, _ in view.xrange(OUTBOX)]
    assert ids[:1] == [f"{recent_ms}-0"] and len(ids) == 2  # the old one is gone
