"""The per-environment hashing generation of ``fractional`` (DESIGN §9, issue 22): the CLI
against a real redis-server, a real ``flagedge serve`` following a switch live (OFREP single
and bulk, explain, the rules stream), and the in-process provider following it.

Expected v3 buckets come from the reference itself, openfeature-flagd-core 2.x (the engine of
the Python flagd provider 0.6.x), run in this process on the same document and contexts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from proxy.model import FractionalHash
from proxy.storage import layout
from tests.integration.conftest import ProxyServer
from tests.integration.test_cli_publish import doc_file, flagedge
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration

ABC = {"a": "a", "b": "b", "c": "c"}
DOC: dict[str, Any] = {"flags": {
    "split": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
              "targeting": {"fractional": [["a", 30], ["b", 30], ["c", 40]]}},
    "by-email": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
                 "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}},
    "plain": {"state": "ENABLED", "variants": ABC, "defaultVariant": "c",
              "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", "b"]}},
}}
USERS = ([{"targetingKey": f"user-{i}", "email": f"u{i}@example.com", "plan": "pro"}
          for i in range(40)]
         + [{"targetingKey": f"ü-日本-{i}", "email": f"é{i}@exämple.com"} for i in range(10)])


def reference_v3(doc: dict[str, Any], key: str, ctx: dict[str, Any]) -> str | None:
    core = FlagdCore()
    core.set_flags(orjson.loads(orjson.dumps(doc)))
    attrs = {k: v for k, v in ctx.items() if k != "targetingKey"}
    return core.resolve_string_value(key, "<default>",
                                     EvaluationContext(ctx.get("targetingKey"), attrs)).variant


def v2_answers(key: str) -> list[str | None]:
    fs = compile_document(DOC)
    return [evaluate(fs, key, u).variant for u in USERS]


def v3_answers(key: str) -> list[str | None]:
    return [reference_v3(DOC, key, u) for u in USERS]


def ofrep_answers(server: ProxyServer, api_key: str, key: str) -> list[str | None]:
    with server.client(api_key) as http:
        return [http.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": u}).json()
                .get("variant") for u in USERS]


def bulk_answers(server: ProxyServer, api_key: str, key: str) -> list[str | None]:
    out = []
    with server.client(api_key) as http:
        for u in USERS:
            items = http.post("/ofrep/v1/evaluate/flags", json={"context": u}).json()["flags"]
            out.append(next(i for i in items if i["key"] == key).get("variant"))
    return out


def test_the_two_generations_bucket_these_users_differently() -> None:
    """Else the tests below could not tell a switch from none."""
    for key in ("split", "by-email"):
        assert v2_answers(key) != v3_answers(key), key
    assert v2_answers("plain") == v3_answers("plain")


# -- the CLI -----------------------------------------------------------------------------------
def _meta(url: str, env: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return client.hgetall(layout.meta_key(env))


def test_envs_set_needs_yes_and_is_a_versioned_change(redis_server: Any, tmp_path: Path) -> None:
    url = redis_server.url
    assert flagedge("push", doc_file(tmp_path, "d.json", DOC), "--env", "prod",
                    url=url).returncode == 0
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", url=url)
    assert r.returncode == 2 and "re-buckets users" in r.stderr and "--yes" in r.stderr
    assert _meta(url, "prod")["version"] == "1" and "fractional_hash" not in _meta(url, "prod")
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes", "-m", "go v3",
                 url=url)
    assert r.returncode == 0, r.stderr
    assert "version 2: fractional hashing v2 -> v3" in r.stdout
    meta = _meta(url, "prod")
    assert (meta["version"], meta["fractional_hash"], meta["updated_by"]) == ("2", "v3", "ci")
    entry = redis.Redis.from_url(url, decode_responses=True).xrevrange(
        layout.changes_key("prod"), count=1)[0][1]
    assert orjson.loads(entry["before"]) == {"flags": {}, "fractional_hash": "v2"}
    assert orjson.loads(entry["after"]) == {"flags": {}, "fractional_hash": "v3"}
    assert (entry["version"], entry["message"], entry["author"]) == ("2", "go v3", "ci")
    # the same setting again writes nothing
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", url=url)
    assert r.returncode == 0 and "already hashes fractional v3" in r.stdout
    assert _meta(url, "prod")["version"] == "2"
    hist = orjson.loads(flagedge("history", "--env", "prod", "--json", url=url).stdout)
    assert [(h["version"], h["fractional_hash"]) for h in hist] == [(2, "v3"), (1, None)]
    assert "fractional_hash=v3" in flagedge("history", "--env", "prod", url=url).stdout
    # the dry run's impact estimate hashes as the environment does
    moved = {"flags": {**DOC["flags"], "split": {**DOC["flags"]["split"], "targeting": {
        "fractional": [["a", 40], ["b", 30], ["c", 30]]}}}}
    r = flagedge("push", doc_file(tmp_path, "moved.json", moved), "--env", "prod", "--dry-run",
                 url=url)
    assert r.returncode == 0, r.stderr
    assert impact_line("split", DOC, moved, FractionalHash.V3) in r.stdout, r.stdout
    assert impact_line("split", DOC, moved, FractionalHash.V2) not in r.stdout
    more = doc_file(tmp_path, "more.json", {"flags": {**DOC["flags"], "new": DOC["flags"][
        "plain"]}})
    # rollback restores rules, not the hashing setting
    assert flagedge("push", more, "--env", "prod", url=url).returncode == 0
    r = flagedge("rollback", "--env", "prod", "--to", "1", url=url)
    assert r.returncode == 0, r.stderr
    meta = _meta(url, "prod")
    assert (meta["version"], meta["fractional_hash"]) == ("4", "v3")


def impact_line(key: str, old: dict[str, Any], new: dict[str, Any],
                generation: FractionalHash) -> str:
    """The share of push --dry-run's synthetic contexts whose answer moves, hashed so."""
    from proxy.release.preview import synthetic_contexts

    before = compile_document(old, fractional_hash=generation)
    after = compile_document(new, fractional_hash=generation)
    ctxs = synthetic_contexts()
    moved = sum(evaluate(before, key, c).variant != evaluate(after, key, c).variant
                for c in ctxs)
    return f"  {key}: {moved / len(ctxs):.2%} of {len(ctxs)} contexts change"


def test_envs_list_shows_the_setting(redis_server: Any, tmp_path: Path) -> None:
    url = redis_server.url
    f = doc_file(tmp_path, "d.json", DOC)
    for env in ("dev", "prod"):
        assert flagedge("push", f, "--env", env, url=url).returncode == 0
    assert flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes",
                    url=url).returncode == 0
    envs = orjson.loads(flagedge("envs", "list", "--json", url=url).stdout)
    assert [(e["env"], e["fractional_hash"]) for e in envs] == [("dev", "v2"), ("prod", "v3")]
    text = flagedge("envs", "list", url=url).stdout.splitlines()
    assert "HASH" in text[0]
    assert [line.split()[3] for line in text[1:]] == ["v2", "v3"]


def test_envs_set_refuses_bad_input_and_writes_nothing(redis_server: Any, tmp_path: Path) -> None:
    url = redis_server.url
    assert flagedge("envs", "set", "nope", "--fractional-hash", "v3", "--yes",
                    url=url).returncode == 5
    assert flagedge("push", doc_file(tmp_path, "d.json", DOC), "--env", "prod",
                    url=url).returncode == 0
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v4", "--yes", url=url)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes",
                 "--expect-version", "7", url=url)
    assert r.returncode == 3
    assert _meta(url, "prod")["version"] == "1"


def test_export_declares_it_and_push_checks_it(redis_server: Any, tmp_path: Path) -> None:
    url = redis_server.url
    f = doc_file(tmp_path, "d.json", DOC)
    for env in ("dev", "prod"):
        assert flagedge("push", f, "--env", env, url=url).returncode == 0
    assert "$fractionalHash" not in flagedge("export", "--env", "dev", url=url).stdout
    assert flagedge("envs", "set", "prod", "--fractional-hash", "v3", "--yes",
                    url=url).returncode == 0
    exported = flagedge("export", "--env", "prod", url=url).stdout
    assert orjson.loads(exported)["$fractionalHash"] == "v3"
    (tmp_path / "prod.json").write_text(exported)
    r = flagedge("push", str(tmp_path / "prod.json"), "--env", "prod", url=url)
    assert r.returncode == 0 and "nothing to push" in r.stdout
    r = flagedge("push", str(tmp_path / "prod.json"), "--env", "dev", url=url)
    assert r.returncode == 1 and "declares v3 but environment dev hashes v2" in r.stderr
    float_weight = {"flags": {"f": {**DOC["flags"]["split"], "targeting": {
        "fractional": [["a", 50.0], ["b", 50]]}}}}
    g = doc_file(tmp_path, "float.json", float_weight)
    assert flagedge("push", g, "--env", "dev", url=url).returncode == 0  # v2: 50.0 is 50
    r = flagedge("push", g, "--env", "prod", url=url)
    assert r.returncode == 1 and "environment prod hashes v3" in r.stderr
    assert _meta(url, "prod")["version"] == "2"


# -- a real server follows a switch live --------------------------------------------------------
def test_serve_follows_a_switch_live(proxy_server: ProxyServer) -> None:
    proxy_server.push(DOC)
    key = proxy_server.create_key("server")
    for flag in ("split", "by-email"):
        assert ofrep_answers(proxy_server, key, flag) == v2_answers(flag)
    r = subprocess_set(proxy_server, "v3")
    assert r.returncode == 0, r.stderr
    proxy_server.wait_version(2)
    for flag in ("split", "by-email", "plain"):
        assert ofrep_answers(proxy_server, key, flag) == v3_answers(flag), flag
        assert bulk_answers(proxy_server, key, flag) == v3_answers(flag), flag
    with proxy_server.client(key) as http:
        explained = http.post("/v1/explain/split", json={"context": USERS[0]}).json()
    assert any("fractional (v3)" in line for line in explained["path"]), explained
    assert explained["result"]["variant"] == v3_answers("split")[0]
    assert explained["fractionalHash"] == "v3"
    # and back: v2 answers again
    assert subprocess_set(proxy_server, "v2").returncode == 0
    proxy_server.wait_version(3)
    assert ofrep_answers(proxy_server, key, "split") == v2_answers("split")


def subprocess_set(server: ProxyServer, generation: str) -> subprocess.CompletedProcess[str]:
    assert server.redis is not None
    return flagedge("envs", "set", server.env, "--fractional-hash", generation, "--yes",
                    url=server.redis.url)


def test_a_server_started_on_a_v3_environment_serves_v3(proxy_factory: Any) -> None:
    first = proxy_factory()
    first.push(DOC)
    assert subprocess_set(first, "v3").returncode == 0
    first.wait_version(2)
    fresh = proxy_factory(wait="readyz")  # loads the whole environment (meta included)
    key = fresh.create_key("client")
    assert ofrep_answers(fresh, key, "split") == v3_answers("split")


async def test_rules_stream_puts_the_new_generation_beside_the_document(
        proxy_server: ProxyServer) -> None:
    from tests.integration.streams_support import Stream, data

    proxy_server.push(DOC)
    key = proxy_server.create_key("server")
    async with httpx.AsyncClient(base_url=proxy_server.url,
                                 timeout=httpx.Timeout(10, read=None)) as http:
        async with Stream(http, "/v1/stream/rules", key=key) as stream:
            first = data(await stream.next())
            assert first["fractional_hash"] == "v2" and "$fractionalHash" not in first["document"]
            assert subprocess_set(proxy_server, "v3").returncode == 0
            event = await stream.next()
            assert event.event == "put", event
            body = data(event)
            assert (body["version"], body["fractional_hash"]) == (2, "v3")
            assert body["document"] == first["document"]
        # a client resuming from before the switch gets a put too (only a put carries it)
        async with Stream(http, "/v1/stream/rules", key=key,
                          last_event_id=str(first["version"])) as stream:
            event = await stream.next()
            assert event.event == "put" and data(event)["fractional_hash"] == "v3"


def test_the_provider_follows_a_switch(proxy_server: ProxyServer) -> None:
    from openfeature import api
    from openfeature.event import ProviderEvent

    from proxy.provider import FlagedgeProvider
    from tests.integration.test_provider import Events

    proxy_server.push(DOC)
    key = proxy_server.create_key("server")
    provider = FlagedgeProvider(proxy_server.url, key, init_timeout=10.0)
    try:
        api.set_provider_and_wait(provider, domain="hash-v3")
        client = api.get_client("hash-v3")
        events = Events(client)

        def answers(flag: str) -> list[str | None]:
            return [client.get_string_details(flag, "<default>", EvaluationContext(
                u["targetingKey"], {k: v for k, v in u.items() if k != "targetingKey"})).variant
                for u in USERS]

        assert answers("split") == v2_answers("split")
        mark = events.mark()
        assert subprocess_set(proxy_server, "v3").returncode == 0
        details = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
        assert sorted(details.flags_changed or []) == ["by-email", "split"]
        wait_until(lambda: answers("split") == v3_answers("split"), timeout=5,
                   what="the provider's v3 answers")
        assert answers("by-email") == v3_answers("by-email")
    finally:
        api.shutdown()


async def test_evaluated_streams_follow_a_switch(proxy_server: ProxyServer) -> None:
    """A browser's evaluated stream gets its users' v3 buckets after the switch."""
    from tests.integration.streams_support import Stream, b64_context, data

    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    # a user whose "split" bucket moves between the generations
    moved = next(i for i, (a, b) in enumerate(zip(v2_answers("split"), v3_answers("split"),
                                                  strict=True)) if a != b)
    user = USERS[moved]
    async with httpx.AsyncClient(base_url=proxy_server.url,
                                 timeout=httpx.Timeout(10, read=None)) as http, \
            Stream(http, "/v1/stream/evaluated", key=key,
                   params={"context": b64_context(user)}) as stream:
        first = {i["key"]: i for i in data(await stream.next())["flags"]}
        assert first["split"]["variant"] == v2_answers("split")[moved]
        assert subprocess_set(proxy_server, "v3").returncode == 0
        event = await stream.next()
        items = {i["key"]: i for i in data(event)["flags"]}
        assert items["split"]["variant"] == v3_answers("split")[moved]
