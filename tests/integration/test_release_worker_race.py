"""The fence under the release worker, many times over: several ReleaseWorker instances (one
per thread, each with its own connection, as in separate serves) tick on the same due
requests against a real redis-server; every request is written exactly once, and one due
before the others are approved-but-not-due is not written early."""

from __future__ import annotations

import threading

import pytest
import redis

from proxy.release import publisher, review
from proxy.release.authorization import Actor
from proxy.release.changeset import Document, make_plan
from proxy.release.worker import ReleaseWorker
from tests.integration.release_support import OFF, ON, log_length, stored_request, version
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

ROUNDS = 10
WORKERS = 4
FLAGS = 3


def scheduled(client: redis.Redis, key: str, apply_at: float) -> int:
    state = publisher.read_state(client, "race")
    current = state.document()
    flip = OFF if current.flags[key] == ON else ON
    new = Document({**current.flags, key: flip}, current.evaluators, current.metadata)
    request = review.propose_plan(client, "race", state, make_plan(current, new),
                                  actor=Actor.cli("ann"), message=key, apply_at=apply_at)
    assert review.approve(client, "race", request.id, Actor.cli("bob")).status == "not_due"
    return request.id


def tick_until_applied(worker: ReleaseWorker, gate: threading.Barrier, client: redis.Redis,
                       ids: list[int]) -> None:
    gate.wait()  # all workers start ticking together
    wait_until(lambda: (worker.tick() or True) and all(
        stored_request(client, "race", i)["state"] == "applied" for i in ids),
        timeout=10, interval=0.005, what="due requests applied")


def test_workers_racing_on_due_requests_write_each_once(redis_server):
    url = redis_server.url
    setup = redis.Redis.from_url(url)
    publisher.push(setup, "race", Document({f"f{i}": ON for i in range(FLAGS)}))
    clients = [redis.Redis.from_url(url) for _ in range(WORKERS)]
    workers = [ReleaseWorker(c, envs=lambda: ["race"]) for c in clients]
    try:
        for _ in range(ROUNDS):
            start_version, start_log = version(setup, "race"), log_length(setup, "race")
            due = review.redis_now(setup, "race") + 1.5  # room for slow previews
            ids = [scheduled(setup, f"f{i}", due) for i in range(FLAGS)]
            later = scheduled(setup, "f0", due + 3600)  # approved, not due: must wait
            assert review.redis_now(setup, "race") < due, "too slow to schedule in time"
            gate = threading.Barrier(WORKERS)
            threads = [threading.Thread(target=tick_until_applied, args=(w, gate, setup, ids))
                       for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert version(setup, "race") == start_version + FLAGS
            assert log_length(setup, "race") == start_log + FLAGS
            applied = sorted(stored_request(setup, "race", i)["applied_version"] for i in ids)
            assert applied == list(range(start_version + 1, start_version + FLAGS + 1))
            assert stored_request(setup, "race", later)["state"] == "open"
            review.cancel(setup, "race", later, Actor.cli("ann"))
    finally:
        for c in [*clients, setup]:
            c.close()


def test_a_broken_scheduled_entry_does_not_stop_the_others(redis_server):
    """Another tool's junk in the requests hash, indexed as due: the worker logs it, skips
    it, and still applies the good request due with it."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        publisher.push(client, "race", Document({"f0": ON}))
        client.hset("flagedge:{race}:requests", "99", "not json")
        client.zadd("flagedge:{race}:schedule", {"99": 0})
        good = scheduled(client, "f0", review.redis_now(client, "race") + 1)
        worker = ReleaseWorker(client, envs=lambda: ["race"])
        wait_until(lambda: (worker.tick() or True)
                   and stored_request(client, "race", good)["state"] == "applied",
                   timeout=10, interval=0.02, what="the good request applied")
        assert version(client, "race") == 2
        assert client.hget("flagedge:{race}:requests", "99") == b"not json"
    finally:
        client.close()
