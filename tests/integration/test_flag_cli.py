"""`flagedge flag KEY --env ENV (--default V | --enable | --disable | --percent N
[--variant V])` (DESIGN §10) as subprocesses against a real redis-server: each mode a
versioned change of that one flag, the protected environment's routing (request N; kill and
break-glass applied and marked), bad input (exit code, message naming flag / variant,
nothing written), --json, --dry-run; and a real serve answering what was written."""

from __future__ import annotations

import orjson
import pytest
import redis

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from tests.integration.release_support import (
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

TARGETED = {**ON, "targeting": {"if": [{"==": [{"var": "email"}, "x@y"]}, "off"]}}
THREE = {"state": "ENABLED", "variants": {"a": 1, "b": 2, "c": 3}, "defaultVariant": "a"}


@pytest.fixture
def env(redis_server, tmp_path):
    """`test` at version 1: flag t (on/off, targeted), m (three variants); (url, client)."""
    url = redis_server.url
    r = flagedge("push", doc_file(tmp_path, "v1.json", {"t": TARGETED, "m": THREE}), "--env",
                 "test", url=url)
    assert r.returncode == 0, r.stderr
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def flag(url: str, *args: str, author: str = "ann"):
    return flagedge("flag", *args, "--env", "test", url=url, author=author)


def last_entry(url: str) -> dict:
    return orjson.loads(flagedge("history", "--env", "test", "--json", url=url).stdout)[0]


def share(rule: dict, key: str, variant: str, users: range) -> tuple[float, set[str]]:
    flags = compile_document({"flags": {key: rule}})
    hit = {f"user-{i}" for i in users
           if evaluate(flags, key, {"targetingKey": f"user-{i}"}).variant == variant}
    return len(hit) / len(users), hit


def test_default_changes_only_the_default_and_keeps_targeting(env):
    url, client = env
    r = flag(url, "t", "--default", "off", "-m", "dark launch over")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "flag t: default variant off: test version 2"
    assert stored_flag(client, "test", "t") == {**TARGETED, "defaultVariant": "off"}
    entry = last_entry(url)
    assert (entry["version"], entry["flags"], entry["author"], entry["message"]) == (
        2, ["t"], "ann", "dark launch over")
    again = flag(url, "t", "--default", "off")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert version(client, "test") == 2


def test_enable_and_disable_write_the_state(env):
    url, client = env
    assert flag(url, "m", "--disable").returncode == 0
    assert stored_flag(client, "test", "m")["state"] == "DISABLED"
    assert last_entry(url)["message"] == "flag m: disable"
    assert flag(url, "m", "--enable").returncode == 0
    assert stored_flag(client, "test", "m") == THREE
    assert version(client, "test") == 3


def test_percent_replaces_targeting_with_a_two_bucket_split(env):
    url, client = env
    r = flag(url, "t", "--percent", "10")
    assert r.returncode == 0, r.stderr
    assert "previous targeting is replaced" in r.stderr
    first = stored_flag(client, "test", "t")
    assert first["targeting"] == {"fractional": [["off", 10], ["on", 90]]}
    portion, in_at_10 = share(first, "t", "off", range(4000))
    assert abs(portion - 0.10) < 0.02
    r = flag(url, "t", "--percent", "30", "--variant", "off")
    assert r.returncode == 0 and "replaced" not in r.stderr, r.stderr
    portion, in_at_30 = share(stored_flag(client, "test", "t"), "t", "off", range(4000))
    assert abs(portion - 0.30) < 0.03
    assert in_at_10 <= in_at_30, "raising the percentage moved users out of the variant"
    r = flag(url, "m", "--percent", "100", "--variant", "c")
    assert r.returncode == 0, r.stderr
    assert share(stored_flag(client, "test", "m"), "m", "c", range(500))[0] == 1.0


@pytest.mark.parametrize(("args", "code", "words"), [
    (["nope", "--enable"], 5, ["flag nope", "environment test"]),
    (["t", "--default", "maybe"], 1, ["flag t", "'maybe'", "off, on"]),
    (["m", "--percent", "20"], 1, ["flag m", "a, b, c", "--variant"]),
    (["m", "--percent", "20", "--variant", "z"], 1, ["flag m", "'z'"]),
    (["m", "--percent", "20", "--variant", "a"], 1, ["a", "default variant"]),
    (["m", "--percent", "101", "--variant", "b"], 1, ["0 to 100", "101"]),
    (["m", "--variant", "b", "--enable"], 2, ["--variant goes with --percent"]),
    (["m"], 2, ["one of the arguments"]),
    (["m", "--enable", "--disable"], 2, ["not allowed with"]),
    (["m", "--enable", "--at", "tomorrow"], 1, ["invalid time 'tomorrow'"]),
    (["m", "--enable", "--break-glass"], 2, ["-m WHY"]),
])
def test_bad_input_is_refused_naming_it_and_writes_nothing(env, args, code, words):
    url, client = env
    r = flag(url, *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    for word in words:
        assert word in r.stderr, (word, r.stderr)
    assert version(client, "test") == 1 and log_length(client, "test") == 1


def test_json_and_dry_run(env):
    url, client = env
    r = flag(url, "m", "--default", "b", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["status"] == "dry_run" and out["base_version"] == 1
    assert out["impact"][0]["flag"] == "m" and out["impact"][0]["share"] == 1.0
    assert version(client, "test") == 1
    text = flag(url, "m", "--default", "b", "--dry-run")
    assert "dry run: nothing written" in text.stdout and "~ m" in text.stdout
    out = orjson.loads(flag(url, "m", "--default", "b", "--json").stdout)
    assert (out["status"], out["version"], out["operation"], out["marks"]) == (
        "ok", 2, "default variant b", [])


def test_protected_env_makes_a_request_except_kill_and_break_glass(env):
    url, client = env
    assert flagedge("envs", "protect", "test", "--approvals", "1", url=url).returncode == 0
    r = flag(url, "m", "--default", "b")
    assert r.returncode == 0 and r.stdout.strip() == "request 1", (r.stdout, r.stderr)
    assert version(client, "test") == 1, "a protected change was written"
    request = stored_request(client, "test", 1)
    assert request["change"]["after"]["flags"]["m"]["defaultVariant"] == "b"
    assert (request["author"], request["message"]) == ("ann", "flag m: default variant b")
    out = orjson.loads(flag(url, "m", "--percent", "5", "--variant", "b", "--json").stdout)
    assert out["status"] == "proposed" and out["request"]["id"] == 2
    r = flag(url, "m", "--disable")
    assert r.returncode == 0 and r.stdout.strip().endswith("test version 2 [kill]"), r.stderr
    assert last_entry(url)["kill"] is True
    r = flag(url, "m", "--enable", "--break-glass", "-m", "incident 12")
    assert r.returncode == 0 and "[break-glass]" in r.stdout, r.stderr
    entry = last_entry(url)
    assert entry["break_glass"] is True and entry["message"] == "incident 12"
    assert flagedge("approve", "1", "--env", "test", url=url, author="bob").returncode == 0
    assert stored_flag(client, "test", "m")["defaultVariant"] == "b"


def test_at_makes_a_scheduled_request_even_unprotected(env):
    url, client = env
    r = flag(url, "m", "--disable", "--at", "+1h")
    assert r.returncode == 0 and r.stdout.strip() == "request 1", (r.stdout, r.stderr)
    request = stored_request(client, "test", 1)
    assert request["apply_at"] > request["created_at"] + 3590
    assert client.zscore("flagedge:{test}:schedule", "1") == request["apply_at"]
    assert version(client, "test") == 1


def test_a_serve_answers_each_one_liner(env, proxy_factory):
    url, _client = env
    proxy = proxy_factory(extra_args=["--no-auth"], wait="readyz")
    ofrep = proxy.client(None)

    def value(key: str) -> dict:
        return ofrep.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": {
            "targetingKey": "u1"}}).json()

    try:
        assert value("m")["value"] == 1
        assert flag(url, "m", "--default", "c").returncode == 0
        wait_until(lambda: value("m").get("value") == 3, timeout=5, what="default c served")
        assert flag(url, "m", "--disable").returncode == 0
        wait_until(lambda: value("m").get("value") is None, timeout=5, what="m disabled")
        assert flag(url, "m", "--enable").returncode == 0
        wait_until(lambda: value("m").get("value") == 3, timeout=5, what="m enabled")
        assert flag(url, "m", "--percent", "100", "--variant", "b").returncode == 0
        wait_until(lambda: value("m").get("value") == 2, timeout=5, what="100% b served")
    finally:
        ofrep.close()
