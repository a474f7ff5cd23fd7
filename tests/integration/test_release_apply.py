"""The apply script as the fence (DESIGN §10), against a real redis-server with real
concurrent clients: exactly one version per request however many approvers race, approve
against cancel, conflicts over referenced $evaluators and set metadata, and rules written
byte for byte as a push writes them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from proxy.release import publisher, review
from proxy.release.authorization import Actor
from proxy.release.changeset import Document
from proxy.storage import policy
from proxy.storage.url import sync_client
from tests.integration.release_support import (
    OFF,
    ON,
    flagedge,
    log_length,
    stored_request,
    version,
)
from tests.integration.test_sources_topologies import cluster  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def document(flags: dict[str, Any], evaluators: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None) -> Document:
    doc: dict[str, Any] = {"flags": flags}
    if evaluators:
        doc["$evaluators"] = evaluators
    if metadata:
        doc["metadata"] = metadata
    return publisher.parse_document(orjson.dumps(doc), source="test")


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def race(url: str, actions: list[Callable[[Any], Any]]) -> list[Any]:
    """Run each action on its own connection in its own thread, released together."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(i: int) -> None:
        c = redis.Redis.from_url(url)
        try:
            barrier.wait(timeout=10)
            results[i] = actions[i](c)
        except Exception as exc:  # the outcome under test, not a failure of the harness
            results[i] = exc
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def approve(rid: int, name: str) -> Callable[[Any], Any]:
    return lambda c: review.approve(c, "prod", rid, Actor.cli(name))


def test_approvers_racing_to_quorum_apply_exactly_once(client, redis_server):
    publisher.push(client, "prod", document({"a": ON}))
    policy.write(client, "prod", policy.Policy(2))
    approvers = ["bob", "carol", "dave", "erin"]
    for round_ in range(12):
        flag = {**ON, "defaultVariant": "off" if round_ % 2 == 0 else "on"}
        request = review.propose(client, "prod", document({"a": flag}),
                                 actor=Actor.cli("ann"), message=f"round {round_}")
        start = version(client, "prod")
        results = race(redis_server.url, [approve(request.id, n) for n in approvers])
        applied = [r for r in results if isinstance(r, review.Outcome)
                   and r.status == "applied"]
        assert len(applied) == 1, results
        assert version(client, "prod") == start + 1
        stored = stored_request(client, "prod", request.id)
        assert stored["state"] == "applied" and stored["applied_version"] == start + 1
        others = [r for r in results if r is not applied[0]]
        # the losers either counted toward the quorum (pending) or found it applied
        assert all((isinstance(r, review.Outcome) and r.status == "pending")
                   or isinstance(r, review.NotOpen) for r in others), results
        entries = [e for e in publisher.history(client, "prod") if e.request == request.id]
        assert len(entries) == 1 and len(entries[0].approvers) == 2


def test_cli_approvers_racing_apply_once(client, redis_server, tmp_path):
    """The same race between real `flagedge approve` processes."""
    publisher.push(client, "prod", document({"a": ON}))
    policy.write(client, "prod", policy.Policy(1))
    request = review.propose(client, "prod", document({"a": OFF}), actor=Actor.cli("ann"),
                             message="x")
    url = redis_server.url
    codes = race(url, [lambda c, n=n: flagedge("approve", str(request.id), "--env", "prod",
                                                url=url, author=n).returncode
                       for n in ("bob", "carol", "dave")])
    assert sorted(codes) == [0, 3, 3]  # one applied; the others found it applied
    assert version(client, "prod") == 2 and log_length(client, "prod") == 2


def test_approve_racing_cancel_one_wins_and_a_cancel_writes_nothing(client, redis_server):
    publisher.push(client, "prod", document({"a": ON}))
    policy.write(client, "prod", policy.Policy(1))
    for round_ in range(12):
        flag = {**ON, "defaultVariant": "off" if round_ % 2 == 0 else "on"}
        current = publisher.read_state(client, "prod").document().flags["a"]
        if current == flag:
            flag = {**ON, "defaultVariant": "on" if flag["defaultVariant"] == "off" else "off"}
        request = review.propose(client, "prod", document({"a": flag}), actor=Actor.cli("ann"),
                                 message="x")
        start = version(client, "prod")
        race(redis_server.url, [approve(request.id, "bob"),
                                lambda c, rid=request.id: review.cancel(c, "prod", rid,
                                                                        Actor.cli("ann"))])
        state = stored_request(client, "prod", request.id)["state"]
        assert state in ("applied", "cancelled")
        assert version(client, "prod") == start + (1 if state == "applied" else 0)
    # which side wins each round is the scheduler's; each round is all or nothing


def test_referenced_evaluator_moved_is_a_conflict_an_unrelated_one_is_not(client):
    evaluators = {"beta": {"in": [{"var": "targetingKey"}, ["u1"]]}, "other": {"var": "x"}}
    uses = {**ON, "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}}
    publisher.push(client, "prod", document({"a": uses, "b": ON}, evaluators))
    policy.write(client, "prod", policy.Policy(1))
    one = review.propose(client, "prod", document({"a": {**uses, "defaultVariant": "off"},
                                                   "b": ON}, evaluators),
                         actor=Actor.cli("ann"), message="a")
    publisher.write(client, "prod", publisher.diff(client, "prod", document(
        {"a": uses, "b": ON}, {**evaluators, "other": {"var": "y"}}))[1])
    assert review.approve(client, "prod", one.id, Actor.cli("bob")).status == "applied"
    two = review.propose(client, "prod", document({"a": uses, "b": ON},
                                                  {**evaluators, "other": {"var": "y"}}),
                         actor=Actor.cli("ann"), message="a back")
    publisher.write(client, "prod", publisher.diff(client, "prod", document(
        {"a": {**uses, "defaultVariant": "off"}, "b": ON},
        {"beta": {"in": [{"var": "targetingKey"}, ["u2"]]}, "other": {"var": "y"}}))[1])
    start = version(client, "prod")
    outcome = review.approve(client, "prod", two.id, Actor.cli("bob"))
    assert outcome.status == "conflict" and "$evaluators.beta" in outcome.reason
    assert "flag a" not in outcome.reason and version(client, "prod") == start


def test_set_metadata_moved_is_a_conflict(client):
    publisher.push(client, "prod", document({"a": ON}, metadata={"team": "web"}))
    request = review.propose(client, "prod", document({"a": OFF}, metadata={"team": "web"}),
                             actor=Actor.cli("ann"), message="x")
    publisher.push(client, "prod", document({"a": ON}, metadata={"team": "api"}))
    outcome = review.approve(client, "prod", request.id, Actor.cli("bob"))
    assert outcome.status == "conflict" and outcome.reason.endswith("metadata")


def test_applied_rules_are_stored_exactly_as_a_push_stores_them(client):
    """Lua never rebuilds the JSON: 1.0 stays 1.0, [] stays [], big integers stay exact."""
    tricky = {"state": "ENABLED", "defaultVariant": "a",
              "variants": {"a": {"x": 1.0, "l": [], "o": {}, "n": 12345678901234567890,
                                 "f": 0.1 + 0.2}, "b": {"x": 1}}}
    publisher.push(client, "prod", document({"a": ON}))
    request = review.propose(client, "prod", document({"a": ON, "t": tricky}),
                             actor=Actor.cli("ann"), message="x")
    assert review.approve(client, "prod", request.id, Actor.cli("bob")).status == "applied"
    publisher.push(client, "copy", document({"a": ON, "t": tricky}))
    assert client.hget("flagedge:{prod}:flags", "t") == client.hget("flagedge:{copy}:flags", "t")
    raw = stored_request(client, "prod", request.id)
    assert raw["change"]["after"]["flags"]["t"]["variants"]["a"]["n"] == 12345678901234567890


def test_policy_set_between_check_and_write_is_caught_by_the_script(client):
    """A guarded write (the CLI's push) checks the policy in the writing script itself."""
    publisher.push(client, "prod", document({"a": ON}))
    _state, plan = publisher.diff(client, "prod", document({"a": OFF}))
    policy.write(client, "prod", policy.Policy(1))  # after the CLI's own check
    with pytest.raises(publisher.ApprovalRequired, match="approval required"):
        publisher.write(client, "prod", plan, guard={})
    assert version(client, "prod") == 1
    result = publisher.write(client, "prod", plan, guard={"kill": "1"}, author="ops")
    assert result.status == "ok"
    assert publisher.history(client, "prod")[0].kill


def test_release_control_on_a_redis_cluster(cluster):  # noqa: F811
    """Every request key lives in the environment's slot: the scripts run on a Cluster, and
    the CLI's --cluster reaches them (two environments, so two slots)."""
    url = cluster[0].url
    c = sync_client(url, cluster=True)
    for env in ("prod", "staging"):
        publisher.push(c, env, document({"a": ON}))
        policy.write(c, env, policy.Policy(1))
        assert policy.read(c, env) == policy.Policy(1)
        request = review.propose(c, env, document({"a": OFF}), actor=Actor.cli("ann"),
                                 message="x")
        with pytest.raises(publisher.ApprovalRequired):
            publisher.write(c, env, publisher.diff(c, env, document({"a": OFF}))[1], guard={})
        r = flagedge("approve", str(request.id), "--env", env, "--cluster", url=url,
                     author="bob")
        assert r.returncode == 0, r.stderr
        assert publisher.read_state(c, env).version == 2
        assert publisher.history(c, env)[0].approvers == ("bob",)


def test_only_approvals_of_the_requests_content_count(client):
    """The apply script counts an approval only when its content hash is the request's (an
    approval given to other content, here written by hand, is not counted)."""
    publisher.push(client, "prod", document({"a": ON}))
    policy.write(client, "prod", policy.Policy(2))
    request = review.propose(client, "prod", document({"a": OFF}), actor=Actor.cli("ann"),
                             message="x")
    stored = stored_request(client, "prod", request.id)
    stored["approvals"] = [{"by": "carol", "at": 1.0, "content_hash": "sha256:other"},
                           {"by": "ann", "at": 1.0, "content_hash": stored["content_hash"]}]
    client.hset("flagedge:{prod}:requests", str(request.id), orjson.dumps(stored))
    outcome = review.approve(client, "prod", request.id, Actor.cli("bob"))
    assert (outcome.status, outcome.approvals, outcome.needed) == ("pending", 1, 2)
    assert version(client, "prod") == 1
    assert review.approve(client, "prod", request.id, Actor.cli("dave")).status == "applied"
