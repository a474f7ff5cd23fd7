"""`flagedge rollout` (DESIGN §10) end to end: real redis-server, real `flagedge serve`
processes (release workers on), the CLI as a subprocess, OFREP single and bulk evaluation
over HTTP. Steps a few seconds apart ramp with no write; pause freezes, abort restores; a
protected environment turns the start into a request; after the last step exactly one
cleanup version is written however many serves race on it."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
import redis

from proxy.release import publisher, review
from proxy.release import rollout as rollouts
from proxy.release.authorization import Actor
from proxy.release.changeset import Document, make_plan
from proxy.release.rollout_rules import Rollout
from proxy.release.worker import ReleaseWorker
from proxy.storage import rollouts as stored_rollouts
from proxy.storage.requests import guarded_write_args
from tests.integration.release_support import OFF, ON, flagedge, pushed, stored_flag, version
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

USERS = [f"user-{i}" for i in range(400)]
SEGMENT = {"if": [{"in": [{"var": "targetingKey"}, ["user-1", "user-2"]]}, "on"]}
TARGETED = {**OFF, "targeting": SEGMENT}


@pytest.fixture
def env(redis_server, tmp_path):
    """`test` at version 1: flag r (on/off, default off, no targeting), t (a segment gets
    on); (url, client)."""
    pushed(redis_server.url, tmp_path, {"r": OFF, "t": TARGETED})
    client = redis.Redis.from_url(redis_server.url)
    yield redis_server.url, client
    client.close()


def rollout(url: str, *args: str, author: str = "ann") -> Any:
    return flagedge("rollout", *args, "--env", "test", url=url, author=author)


def record(client: redis.Redis, key: str) -> Rollout | None:
    raw = client.hget("flagedge:{test}:rollouts", key)
    return None if raw is None else Rollout.from_json(raw)


def on_users(http: httpx.Client, key: str) -> set[str]:
    """The users served ``on``: even ones by single evaluation, odd ones by bulk."""
    on = set()
    for i, user in enumerate(USERS):
        body = {"context": {"targetingKey": user}}
        if i % 2 == 0:
            r = http.post(f"/ofrep/v1/evaluate/flags/{key}", json=body)
            assert r.status_code == 200, r.text
            variant = r.json()["variant"]
        else:
            r = http.post("/ofrep/v1/evaluate/flags", json=body)
            assert r.status_code == 200, r.text
            variant = {f["key"]: f.get("variant") for f in r.json()["flags"]}[key]
        if variant == "on":
            on.add(user)
    return on


def sweep_in_step(http: httpx.Client, key: str, ramp: Rollout) -> tuple[int, set[str]]:
    """(the step in force during the whole sweep, the users on), or (-2, users) when the
    sweep straddled a boundary (its users still count for monotonicity)."""
    before = time.time()
    users = on_users(http, key)
    step = ramp.step_at(before)
    return (step if ramp.step_at(time.time()) == step else -2), users


def within_error(count: int, percent: int, n: int = len(USERS)) -> bool:
    sigma = math.sqrt(n * percent / 100 * (1 - percent / 100))
    return abs(count - n * percent / 100) <= 5 * sigma + 1


def test_a_rollout_ramps_by_itself_monotonically_and_is_cleaned_up(env, proxy_factory):
    url, client = env
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    r = rollout(url, "r", "--variant", "on", "--steps", "20,50,100", "--every", "3s",
                "--start", "+2s", "-m", "ship it")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flag r: rollout of on: 20,50,100% every 3s from ")
    assert r.stdout.rstrip().endswith("test version 2")
    ramp = record(client, "r")
    assert ramp is not None and (ramp.state, ramp.version, ramp.steps) == ("running", 2,
                                                                           (20, 50, 100))
    proxy.wait_version(2)
    seen: dict[int, set[str]] = {}
    previous: set[str] = set()
    with proxy.client(None) as http:
        while time.time() < ramp.end + 1:
            step, users = sweep_in_step(http, "r", ramp)
            assert previous <= users, "a user left the variant"
            previous = users
            if step != -2:
                seen.setdefault(step, users)
    assert set(seen) >= {-1, 0, 1}, f"no clean sweep in some step: {sorted(seen)}"
    assert seen[-1] == set()
    for step, percent in enumerate(ramp.steps[:2]):
        assert within_error(len(seen[step]), percent), (percent, len(seen[step]))
    wait_until(lambda: record(client, "r").state == "done", timeout=10,
               what="the cleanup write")
    assert version(client, "test") == 3
    assert stored_flag(client, "test", "r") == {**OFF, "defaultVariant": "on"}
    entry = orjson.loads(flagedge("history", "--env", "test", "--json", url=url).stdout)[0]
    assert (entry["version"], entry["author"], entry["applied_by"]) == (3, "ann", "scheduler")
    proxy.wait_version(3)
    with proxy.client(None) as http:
        assert on_users(http, "r") == set(USERS)


def test_pause_freezes_and_abort_restores(env, proxy_factory):
    url, client = env
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    r = rollout(url, "t", "--variant", "on", "--steps", "10,50,90", "--every", "2s",
                "--json")
    assert r.returncode == 0, r.stderr
    ramp = Rollout.from_json(orjson.loads(r.stdout)["rollout"])
    wait_until(lambda: ramp.step_at(time.time()) == 1, timeout=10, what="the second step")
    r = rollout(url, "t", "--pause")
    assert r.returncode == 0, r.stderr
    assert "paused at 50%" in r.stdout
    paused = stored_flag(client, "test", "t")
    assert "$flagd" not in orjson.dumps(paused).decode()
    status = orjson.loads(rollout(url, "t", "--status", "--json").stdout)
    assert (status["state"], status["step"], status["percent"],
            status["next_boundary"]) == ("paused", 2, 50, None)
    proxy.wait_version(3)
    with proxy.client(None) as http:
        frozen = on_users(http, "t")
        assert within_error(len(frozen - {"user-1", "user-2"}), 50, 398)
        assert {"user-1", "user-2"} <= frozen  # the previous targeting still serves them
        wait_until(lambda: time.time() > ramp.end + 1, timeout=10, what="past the last step")
        assert on_users(http, "t") == frozen
        assert rollout(url, "t", "--pause").returncode == 1  # not running any more
        r = rollout(url, "t", "--abort")
        assert r.returncode == 0, r.stderr
        assert stored_flag(client, "test", "t") == TARGETED
        assert record(client, "t").state == "aborted"
        proxy.wait_version(4)
        assert on_users(http, "t") == {"user-1", "user-2"}
    assert version(client, "test") == 4  # no cleanup write for an aborted rollout
    # every rollout write is an ordinary change: in the outbox, with its author
    outbox = [fields for _id, fields in client.xrange("flagedge:{test}:outbox")
              if fields[b"type"] == b"change"]
    assert [(f[b"version"], f[b"author"]) for f in outbox] == [
        (b"1", b"ci"), (b"2", b"ann"), (b"3", b"ann"), (b"4", b"ann")]


def test_protected_start_is_a_request_and_pause_abort_are_kill_operations(env):
    url, client = env
    assert flagedge("envs", "protect", "test", "--approvals", "1", url=url).returncode == 0
    r = rollout(url, "r", "--variant", "on", "--steps", "5,50", "--every", "1h")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "request 1\n"
    assert "give --start a time after the approval" in r.stderr
    assert version(client, "test") == 1 and record(client, "r") is None
    request = orjson.loads(flagedge("requests", "show", "1", "--env", "test", "--json",
                                    url=url).stdout)
    assert request["change"]["rollouts"]["r"]["steps"] == [5, 50]
    r = flagedge("approve", "1", "--env", "test", url=url, author="bob")
    assert r.returncode == 0, r.stderr
    ramp = record(client, "r")
    assert (ramp.state, ramp.version, ramp.author) == ("running", 2, "ann")
    assert "$flagd.timestamp" in orjson.dumps(stored_flag(client, "test", "r")).decode()
    for op, state in (("--pause", "paused"), ("--abort", "aborted")):
        r = rollout(url, "r", op, author="carl")
        assert r.returncode == 0, r.stderr
        assert r.stdout.rstrip().endswith("[kill]")
        assert record(client, "r").state == state
        entry = orjson.loads(flagedge("history", "--env", "test", "--json", url=url).stdout)[0]
        assert (entry["kill"], entry["author"]) == (True, "carl")
    assert stored_flag(client, "test", "r") == OFF


def test_three_serves_write_one_cleanup_version(env, proxy_factory):
    url, client = env
    proxies = [proxy_factory(extra_args=["--no-auth"], wait="readyz") for _ in range(3)]
    r = rollout(url, "r", "--variant", "on", "--steps", "30,60", "--every", "2s")
    assert r.returncode == 0, r.stderr
    ramp = record(client, "r")
    wait_until(lambda: record(client, "r").state == "done", timeout=15,
               what="the cleanup write")
    for proxy in proxies:
        proxy.wait_version(3)
    # Every worker has ticked well past the boundary (at 0.2 s): still one cleanup version.
    wait_until(lambda: time.time() > ramp.end + 2, timeout=10, what="more ticks")
    assert version(client, "test") == 3
    entries = orjson.loads(flagedge("history", "--env", "test", "--json", url=url).stdout)
    assert [e["applied_by"] for e in entries[:2]] == ["scheduler", None]
    assert sum(p.logs().count("rollout of r in test done") for p in proxies) == 1
    # below 100 %: the last step's rule, without the timestamp chain
    assert stored_flag(client, "test", "r") == {**OFF, "targeting": {"if": [
        {"==": [{"fractional": [["in", 60], ["out", 40]]}, "in"]}, "on", None]}}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["r", "--variant", "blue", "--steps", "5,50", "--every", "1h"], 1,
     "flag r has no variant 'blue'"),
    (["r", "--variant", "on", "--steps", "50,5", "--every", "1h"], 1, "strictly increasing"),
    (["r", "--variant", "on", "--steps", "5,500", "--every", "1h"], 1, "from 1 to 100"),
    (["r", "--variant", "on", "--steps", "5,50", "--every", "0s"], 1, "invalid duration"),
    (["r", "--variant", "on", "--steps", "5,50", "--every", "1h", "--start", "9am"], 1,
     "invalid time"),
    (["nope", "--variant", "on", "--steps", "5,50", "--every", "1h"], 5,
     "flag nope is not in environment test"),
    (["r", "--variant", "on", "--steps", "5,50"], 2, "needs --every"),
    (["r", "--status", "--steps", "5"], 2, "--steps only go with starting"),
    (["r", "--status"], 5, "flag r has no rollout"),
    (["r", "--pause"], 5, "flag r has no rollout"),
])
def test_bad_input_is_refused_and_writes_nothing(env, args, code, message):
    url, client = env
    r = rollout(url, *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert version(client, "test") == 1 and record(client, "r") is None


def test_a_second_rollout_of_a_running_flag_is_refused(env):
    url, client = env
    start = ["r", "--variant", "on", "--steps", "5,50", "--every", "1h"]
    assert rollout(url, *start).returncode == 0
    r = rollout(url, *start)
    assert r.returncode == 1 and "already in a running rollout" in r.stderr, r.stderr
    assert version(client, "test") == 2
    status = orjson.loads(rollout(url, "r", "--status", "--json").stdout)
    assert (status["state"], status["step"], status["percent"], status["ramping"]) == (
        "running", 1, 5, True)
    assert status["next_boundary"] == status["ends"]


def test_started_now_the_first_step_is_in_force_at_once(env):
    """The functions the admin API will call: a start without a time begins at once (its
    start is rounded down, not up to the next second), and status says step 1."""
    _url, client = env
    written = rollouts.start(client, "test", "r", variant="on", steps=(5, 50), every=3600,
                             actor=Actor.cli("ann"))
    now = review.redis_now(client, "test")
    assert written.status == "ok" and written.rollout.start <= now
    status = rollouts.status(client, "test", "r")
    assert (status["step"], status["percent"], status["version"]) == (1, 5, 2)


def test_workers_racing_on_a_finished_rollout_write_one_version(env):
    """The cleanup's fence, many times over: four release workers (own connections, as in
    separate serves) released together on a rollout past its last step."""
    url, client = env
    clients = [redis.Redis.from_url(url) for _ in range(4)]
    workers = [ReleaseWorker(c, envs=lambda: ["test"]) for c in clients]
    try:
        for _ in range(8):
            before = version(client, "test")
            past = review.redis_now(client, "test") - 120  # its last step began a minute ago
            rollouts.start(client, "test", "r", variant="on", steps=(20, 70), every=60,
                           start_at=past, actor=Actor.cli("ann"))
            results = race(workers)
            done = [f for found in results for f in found if f.status == "done"]
            assert len(done) == 1 and version(client, "test") == before + 2, results
            assert record(client, "r").state == "done"  # the next round wraps its rule
    finally:
        for c in clients:
            c.close()


def race(workers: list[ReleaseWorker]) -> list[list[rollouts.Finished]]:
    """Every worker's cleanup pass, released together by a barrier."""
    gate = threading.Barrier(len(workers))
    results: list[list[rollouts.Finished]] = []

    def one(worker: ReleaseWorker) -> None:
        gate.wait()
        results.append(worker.finish_rollouts("test"))

    threads = [threading.Thread(target=one, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_a_broken_rollouts_key_refuses_the_write_and_writes_nothing(env):
    url, client = env
    client.set("flagedge:{test}:rollouts", "not a hash")
    r = rollout(url, "r", "--variant", "on", "--steps", "5,50", "--every", "1h")
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "wrong kind of value" in r.stderr  # the read before the script already fails
    # the script checks the key itself before writing (a key broken between read and write)
    plan = make_plan(Document({"r": OFF}, {}, {}), Document({"r": ON}, {}, {}))
    args = guarded_write_args({}, False) + publisher.write_args(plan)
    with pytest.raises(redis.ResponseError, match=r"nothing written.*rollouts is a string"):
        stored_rollouts.call_write(client, "test", "r", None, b'{"state":"running"', args)
    assert version(client, "test") == 1 and stored_flag(client, "test", "r") == OFF


def in_first_step(flag: dict[str, Any], ramp: Rollout) -> str:
    """A user the first step puts in the variant, by the real evaluator at that step's time."""
    from unittest import mock

    from proxy.evaluation import engine
    from proxy.evaluation.documents import compile_document

    flags = compile_document({"flags": {"r": flag}})
    with mock.patch.object(engine, "time", mock.Mock(time=lambda: ramp.start + 1)):
        return next(u for u in USERS if engine.evaluate(flags, "r", {"targetingKey": u})
                    .variant == "on")


async def test_a_step_reaches_streams_and_the_provider_with_no_write(env, proxy_factory):
    """At the first step's boundary (no write: the rule ramps by itself) the events stream
    tells the OFREP web flow to re-fetch, the evaluated stream patches the user's value and
    FlagedgeProvider, evaluating in-process, serves the variant."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from proxy.provider import FlagedgeProvider
    from tests.integration.streams_support import Stream, b64_context, data, until_told

    url, client = env
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    r = rollout(url, "r", "--variant", "on", "--steps", "50,100", "--every", "8s",
                "--start", "+6s")
    assert r.returncode == 0, r.stderr
    ramp = record(client, "r")
    assert ramp is not None
    proxy.wait_version(2)
    user = in_first_step(stored_flag(client, "test", "r"), ramp)
    api.set_provider_and_wait(FlagedgeProvider(proxy.url, "none", init_timeout=10.0),
                              domain="rollout")
    of = api.get_client("rollout")
    ctx = EvaluationContext(targeting_key=user)
    try:
        async with httpx.AsyncClient(base_url=proxy.url,
                                     timeout=httpx.Timeout(10, read=None)) as http, \
                Stream(http, "/ofrep/v1/events") as events, \
                Stream(http, "/v1/stream/evaluated",
                       params={"context": b64_context({"targetingKey": user})}) as evaluated:
            await events.next(data_only=False)
            put = await evaluated.next()
            assert time.time() < ramp.start, "too slow to see the rollout before its start"
            assert {i["key"]: i["value"] for i in data(put)["flags"]}["r"] is False
            assert of.get_boolean_value("r", False, ctx) is False
            refetch = await events.next(timeout=until_told(ramp.start))
            assert data(refetch)["type"] == "refetchEvaluation"
            patch = await evaluated.next(timeout=until_told(ramp.start))
            assert patch.event == "patch"
            assert {i["key"]: i["value"] for i in data(patch)["flags"]}["r"] is True
            wait_until(lambda: of.get_boolean_value("r", False, ctx) is True, timeout=2,
                       what="the provider serving the first step")
            assert time.time() < ramp.boundary(1) and version(client, "test") == 2
    finally:
        api.shutdown()
