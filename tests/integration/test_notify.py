"""Signed webhook notifications (DESIGN §10): the outbox delivered by real `flagedge serve`
processes to a real local HTTP receiver, webhooks managed by the real CLI, a real
redis-server. Loopback receivers need `--allow-private` (the SSRF guard refuses them
otherwise, which one test checks)."""

from __future__ import annotations

import orjson
import pytest
import redis

from tests.integration.release_support import OFF, ON, doc_file, flagedge
from tests.integration.test_sources_topologies import cluster  # noqa: F401 (fixture)
from tests.integration.webhook_receiver import Receiver, verify
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks docs' example form
FAST = {"FLAGEDGE_NOTIFY_BACKOFF": "0.1", "FLAGEDGE_NOTIFY_ATTEMPTS": "30"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def push(tmp_path, url, flags, name, message="", author="ci"):
    r = flagedge("push", doc_file(tmp_path, name, flags), "--env", "test", "-m", message,
                 url=url, author=author)
    assert r.returncode == 0, r.stderr


def add_hook(url, target, *extra):
    r = flagedge("notify", "add", target, "--env", "test", "--allow-private", "--json", *extra,
                 url=url)
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)


def rclient(server):
    return redis.Redis.from_url(server.url)


def settled(client) -> bool:
    """Every outbox entry acknowledged and no retry state left: nothing more will be sent."""
    info = client.xpending("flagedge:{test}:outbox", "notify")
    return info["pending"] == 0 and not client.exists("flagedge:{test}:deliveries")


def test_a_push_and_a_requests_life_each_notify_signed(proxy_factory, redis_server, receiver,
                                                        tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON, "b": ON}, "v1.json")
    add_hook(url, receiver.url, "--secret", SECRET)
    proxy_factory(wait="readyz")
    push(tmp_path, url, {"a": OFF, "b": ON}, "v2.json", "turn a off", author="ann")
    assert flagedge("envs", "protect", "test", "--approvals", "2", url=url).returncode == 0
    steps = [("propose", doc_file(tmp_path, "v3.json", {"a": ON, "b": ON}), "-m", "a back on"),
             ("approve", "1"), ("approve", "1"),
             ("propose", doc_file(tmp_path, "v4.json", {"a": ON}), "-m", "drop b"),
             ("reject", "2", "-m", "b is still used"),
             ("propose", doc_file(tmp_path, "v5.json", {"a": OFF, "b": ON}), "-m", "again"),
             ("cancel", "3")]
    for (cmd, *rest), who in zip(steps, ["ann", "bob", "carl", "ann", "dan", "ann", "ann"],
                                 strict=True):
        r = flagedge(cmd, *rest, "--env", "test", url=url, author=who)
        assert r.returncode == 0, (cmd, r.stderr)
    wait_until(lambda: len(receiver.accepted()) >= 8, timeout=15, what="8 notifications")
    got = receiver.accepted()
    assert [m.json["type"] for m in got] == [  # one serve: in outbox order
        "change.applied", "request.proposed", "request.approved", "change.applied",
        "request.proposed", "request.rejected", "request.proposed", "request.cancelled"]
    for m in got:
        assert verify(SECRET, m.headers, m.body), m.headers
        assert not verify("whsec_" + "A" * 32, m.headers, m.body)
    assert len({m.webhook_id for m in got}) == len(got)
    pushed = got[0].json
    assert pushed["type"] == "change.applied"
    data = pushed["data"]
    assert (data["env"], data["version"], data["author"], data["message"]) == (
        "test", 2, "ann", "turn a off")
    assert data["approvers"] == [] and data["request"] is None
    assert list(data["diff"]["changed"]) == ["a"]
    assert data["impact"][0]["flag"] == "a" and data["impact"][0]["share"] == 1.0
    assert "url" not in data  # no ui_url set: no link
    by_event = {(m.json["type"], m.json["data"].get("request")): m.json["data"] for m in got}
    assert by_event[("request.proposed", 1)]["author"] == "ann"
    assert by_event[("request.proposed", 1)]["diff"]["changed"]
    assert by_event[("request.approved", 1)]["by"] == "bob"
    applied = by_event[("change.applied", 1)]
    assert (applied["version"], applied["approvers"], applied["message"]) == (
        3, ["bob", "carl"], "a back on")
    assert applied["impact"] and applied["impact"][0]["flag"] == "a"
    assert by_event[("request.rejected", 2)]["by"] == "dan"
    assert "b is still used" in by_event[("request.rejected", 2)]["reason"]
    assert by_event[("request.cancelled", 3)]["by"] == "ann"
    assert by_event[("request.cancelled", 3)]["state"] == "cancelled"


def test_a_failing_receiver_gets_the_entry_on_retry_with_the_same_webhook_id(
        proxy_factory, redis_server, receiver, tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v1.json")
    add_hook(url, receiver.url, "--secret", SECRET)
    receiver.fail_first = 3
    proxy_factory(wait="readyz", environ=FAST)
    push(tmp_path, url, {"a": OFF}, "v2.json", "off")
    wait_until(lambda: receiver.accepted(), timeout=15, what="the delivery after 3 failures")
    attempts = receiver.all()
    assert [a.status for a in attempts] == [500, 500, 500, 200]
    assert len({a.webhook_id for a in attempts}) == 1  # receivers de-duplicate on it
    assert len({a.body for a in attempts}) == 1
    assert all(verify(SECRET, a.headers, a.body) for a in attempts)
    client = rclient(redis_server)
    wait_until(lambda: settled(client), timeout=10, what="the entry acknowledged")
    assert len(receiver.all()) == 4


def test_a_receiver_down_then_up_gets_the_entry(proxy_factory, redis_server, tmp_path):
    url = redis_server.url
    down = Receiver().start()
    port = down.port
    down.stop()  # nothing listens there now
    push(tmp_path, url, {"a": ON}, "v1.json")
    add_hook(url, f"http://127.0.0.1:{port}/hook", "--secret", SECRET)
    proxy_factory(wait="readyz", environ=FAST)
    push(tmp_path, url, {"a": OFF}, "v2.json", "off")
    client = rclient(redis_server)

    def retried() -> bool:
        states = client.hvals("flagedge:{test}:deliveries")
        return any(orjson.loads(s)["attempts"] >= 2 for s in states)

    wait_until(retried, timeout=15, what="two failed attempts while the receiver is down")
    up = Receiver(port=port).start()
    try:
        wait_until(lambda: up.accepted(), timeout=15, what="the delivery once it is up")
        assert up.accepted()[0].json["data"]["version"] == 2
        assert verify(SECRET, up.accepted()[0].headers, up.accepted()[0].body)
    finally:
        up.stop()


def test_deliveries_that_run_out_of_retries_are_listed_as_failed(proxy_factory, redis_server,
                                                                 receiver, tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v1.json")
    hook = add_hook(url, receiver.url)
    receiver.always_fail = True
    proxy_factory(wait="readyz", environ={"FLAGEDGE_NOTIFY_BACKOFF": "0.05",
                                          "FLAGEDGE_NOTIFY_ATTEMPTS": "3"})
    push(tmp_path, url, {"a": OFF}, "v2.json", "off")

    def failed() -> list:
        r = flagedge("notify", "failed", "--env", "test", "--json", url=url)
        assert r.returncode == 0, r.stderr
        return orjson.loads(r.stdout)

    rows = wait_until(failed, timeout=15, what="a failed delivery listed")
    assert len(rows) == 1
    row = rows[0]
    assert (row["webhook"], row["url"], row["attempts"], row["type"]) == (
        hook["id"], receiver.url, "3", "change.applied")
    assert row["error"] == "HTTP 500"
    attempts = receiver.all()
    assert len(attempts) == 3 and {a.webhook_id for a in attempts} == {row["webhook_id"]}
    assert verify(hook["secret"], attempts[0].headers, attempts[0].body)  # generated secret
    wait_until(lambda: settled(rclient(redis_server)), timeout=10, what="given up and acked")
    text = flagedge("notify", "failed", "--env", "test", url=url).stdout
    assert row["webhook_id"] in text and "3 attempts" in text


def test_private_and_loopback_urls_are_refused_unless_allowed(proxy_factory, redis_server,
                                                              receiver, tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v1.json")
    for target in (receiver.url, "http://localhost:9/x", "http://10.1.2.3/x",
                   "http://169.254.169.254/latest/meta-data", "http://[::1]:9/x"):
        r = flagedge("notify", "add", target, "--env", "test", url=url)
        assert r.returncode == 1, (target, r.stdout)
        assert "private or loopback" in r.stderr and "--allow-private" in r.stderr
    r = flagedge("notify", "add", "ftp://example.com/x", "--env", "test", url=url)
    assert r.returncode == 1 and "http(s)" in r.stderr
    assert orjson.loads(flagedge("notify", "list", "--env", "test", "--json",
                                 url=url).stdout) == []
    # At delivery too: a webhook stored without allow_private (as if its name had resolved
    # to a public address when added) that now points at loopback is never called.
    hook = add_hook(url, receiver.url)
    client = rclient(redis_server)
    client.hset("flagedge:{test}:webhooks", hook["id"],
                orjson.dumps({**hook, "allow_private": False}))
    proxy_factory(wait="readyz", environ={"FLAGEDGE_NOTIFY_BACKOFF": "0.05",
                                          "FLAGEDGE_NOTIFY_ATTEMPTS": "2"})
    push(tmp_path, url, {"a": OFF}, "v2.json", "off")
    rows = wait_until(lambda: orjson.loads(flagedge("notify", "failed", "--env", "test",
                                                    "--json", url=url).stdout),
                      timeout=15, what="the refused delivery listed")
    assert "private or loopback" in rows[0]["error"]
    assert receiver.all() == []


def test_two_serves_deliver_each_entry_once(proxy_factory, redis_server, receiver, tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v0.json")
    add_hook(url, receiver.url, "--secret", SECRET)
    serves = [proxy_factory(wait="readyz") for _ in range(2)]
    client = rclient(redis_server)
    for n in range(1, 21):
        push(tmp_path, url, {"a": ON if n % 2 == 0 else OFF, "n": {**ON, "metadata": {"n": n}}},
             f"v{n}.json", f"change {n}")
    wait_until(lambda: len(receiver.all()) >= 20, timeout=20, what="20 notifications")
    wait_until(lambda: settled(client), timeout=10, what="every entry acknowledged")
    got = receiver.all()
    assert len(got) == 20 and all(g.status == 200 for g in got)
    assert len({g.webhook_id for g in got}) == 20
    assert sorted(g.json["data"]["version"] for g in got) == list(range(2, 22))
    consumers = client.xinfo_consumers("flagedge:{test}:outbox", "notify")
    assert len(consumers) == 2
    assert serves[0].stop() == 0  # a graceful stop leaves the group (nothing pending)
    assert len(client.xinfo_consumers("flagedge:{test}:outbox", "notify")) == 1


def test_a_dead_serves_entry_is_taken_over_with_the_same_webhook_id(proxy_factory,
                                                                    redis_server, receiver,
                                                                    tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v1.json")
    add_hook(url, receiver.url, "--secret", SECRET)
    receiver.fail_first = 1
    environ = {"FLAGEDGE_NOTIFY_BACKOFF": "2", "FLAGEDGE_NOTIFY_TAKEOVER": "1"}
    first = proxy_factory(wait="readyz", environ=environ)
    push(tmp_path, url, {"a": OFF}, "v2.json", "off")
    client = rclient(redis_server)
    wait_until(lambda: client.hvals("flagedge:{test}:deliveries"), timeout=15,
               what="the first, failed attempt recorded")
    first.kill()  # SIGKILL while the entry waits for its retry
    owner = client.xinfo_consumers("flagedge:{test}:outbox", "notify")
    assert [c["pending"] for c in owner] == [1]
    proxy_factory(wait="readyz", environ=environ)
    wait_until(lambda: receiver.accepted(), timeout=20, what="the entry delivered by the other")
    attempts = receiver.all()
    assert [a.status for a in attempts] == [500, 200]
    assert attempts[0].webhook_id == attempts[1].webhook_id
    assert attempts[0].body == attempts[1].body
    wait_until(lambda: settled(client), timeout=10, what="the entry acknowledged")
    consumers = {c["name"]: c["pending"] for c in
                 client.xinfo_consumers("flagedge:{test}:outbox", "notify")}
    assert len(consumers) == 2 and sum(consumers.values()) == 0


def test_delivery_goes_on_after_the_outbox_is_deleted(proxy_factory, redis_server, receiver,
                                                      tmp_path):
    url = redis_server.url
    push(tmp_path, url, {"a": ON}, "v1.json")
    add_hook(url, receiver.url)
    proxy_factory(wait="readyz")
    push(tmp_path, url, {"a": OFF}, "v2.json")
    wait_until(lambda: len(receiver.accepted()) == 1, timeout=15, what="the first delivery")
    rclient(redis_server).delete("flagedge:{test}:outbox")  # its group goes with it
    push(tmp_path, url, {"a": ON}, "v3.json")
    wait_until(lambda: len(receiver.accepted()) == 2, timeout=15, what="the next delivery")
    assert receiver.accepted()[1].json["data"]["version"] == 3


def test_delivery_on_a_redis_cluster(proxy_factory, cluster, receiver, tmp_path):  # noqa: F811
    """Each environment's outbox, webhooks and retry state live in its own slot: a serve with
    --cluster delivers both environments' entries (two environments, two slots)."""
    url = cluster[0].url
    envs = ("prod", "staging")
    for env in envs:
        r = flagedge("push", doc_file(tmp_path, f"{env}1.json", {"a": ON}), "--env", env,
                     "--cluster", url=url)
        assert r.returncode == 0, r.stderr
        r = flagedge("notify", "add", receiver.url, "--env", env, "--allow-private",
                     "--cluster", url=url)
        assert r.returncode == 0, r.stderr
    proxy_factory(redis=cluster[0], extra_args=["--cluster"], wait="readyz")
    for env in envs:
        r = flagedge("push", doc_file(tmp_path, f"{env}2.json", {"a": OFF}), "--env", env,
                     "--cluster", url=url)
        assert r.returncode == 0, r.stderr
    wait_until(lambda: len(receiver.accepted()) == 2, timeout=20, what="both environments")
    assert sorted(m.json["data"]["env"] for m in receiver.accepted()) == sorted(envs)


def test_notify_test_sends_a_signed_message_and_fails_on_a_refusal(redis_server, receiver):
    url = redis_server.url
    hook = add_hook(url, receiver.url)
    sent = flagedge("notify", "test", hook["id"], "--env", "test", "--json", url=url,
                    author="ops")
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["delivered"] is True
    (got,) = receiver.all()
    assert verify(hook["secret"], got.headers, got.body)
    assert (got.json["type"], got.json["data"]["by"]) == ("webhook.test", "ops")
    receiver.always_fail = True
    refused = flagedge("notify", "test", hook["id"], "--env", "test", url=url)
    assert refused.returncode == 1
    assert "not delivered: HTTP 500" in refused.stdout
    unknown = flagedge("notify", "test", "wh_000000000000", "--env", "test", url=url)
    assert unknown.returncode != 0 and "no webhook wh_000000000000" in unknown.stderr


def test_entries_of_an_environment_without_webhooks_are_acknowledged_in_batches(
        proxy_factory, redis_server, tmp_path):
    """Nothing to deliver: each batch read from the outbox is acknowledged with one XACK
    (counted by Redis itself, scripts included), not a script per entry."""
    url = redis_server.url
    for n in range(6):  # written while no serve runs: one batch waits
        push(tmp_path, url, {"a": ON if n % 2 else OFF}, f"v{n}.json")
    client = rclient(redis_server)
    client.config_resetstat()
    proxy_factory(wait="readyz")
    wait_until(lambda: settled(client), timeout=15, what="the outbox acknowledged")
    acks = client.info("commandstats").get("cmdstat_xack", {}).get("calls", 0)
    assert 1 <= acks <= 2
