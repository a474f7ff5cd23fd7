"""Environment isolation and key kinds on a real server with two environments (``alpha``,
``beta``; every value names its environment, so a leak shows in a body): a key or stream
token for alpha never reads beta through evaluations (single, bulk), the three streams,
``/v1/rules``, explain or ``/v1/envs``, by header, ``?key=`` or ``?token=``; tampered,
forged and expired tokens are refused; ``?key=``/``?token=`` only work on stream URLs (a
token on the events stream only, ``?key=`` for client keys only); client keys cannot read
raw rules or explain."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from proxy.api.tokens import StreamTokens
from proxy.keys import hash_key
from proxy.storage import layout
from tests.hardening.conftest import (
    BULK,
    TwoEnvs,
    b64_context,
    env_doc,
    http,
    ofrep_error_body,
)
from tests.integration.streams_support import Stream, vid

pytestmark = pytest.mark.integration

ENVS = ("alpha", "beta")
STREAMS = ("/ofrep/v1/events", "/v1/stream/evaluated", "/v1/stream/rules")


def other(env: str) -> str:
    return "beta" if env == "alpha" else "alpha"


def assert_only(env: str, body: str) -> None:
    assert env in body, body[:300]
    assert other(env) not in body, f"{other(env)} leaked into {env}'s answer: {body[:500]}"


def stream_token(setup: TwoEnvs, env: str, kind: str = "client") -> str:
    with http(setup.server, setup.key(env, kind)) as c:
        uri = c.post(BULK, json={}).json()["eventStreams"][0]["endpoint"]["requestUri"]
    return parse_qs(urlsplit(uri).query)["token"][0]


def test_keys_of_each_kind_read_only_their_environment(two_envs: TwoEnvs) -> None:
    s = two_envs.server
    for env in ENVS:
        for kind in ("client", "server", "admin"):
            key = two_envs.key(env, kind)
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                with httpx.Client(base_url=s.url, headers=headers, timeout=10) as c:
                    bulk = c.post(BULK, json={"context": {"plan": "pro"}})
                    assert bulk.status_code == 200
                    assert {f["key"] for f in bulk.json()["flags"]} == {"shared", f"secret-{env}"}
                    assert_only(env, bulk.text)
                    single = c.post(f"{BULK}/shared", json={"context": {"plan": "pro"}})
                    assert single.json()["value"] == f"{env}-b"
                    foreign = c.post(f"{BULK}/secret-{other(env)}", json={})
                    assert foreign.status_code == 404
                    assert ofrep_error_body(foreign)["errorCode"] == "FLAG_NOT_FOUND"
                    assert "only-in" not in foreign.text
                    # The other env's name as a path, a header or a parameter changes nothing.
                    sneaky = c.post(BULK, json={"context": {"env": other(env)}},
                                    params={"env": other(env)},
                                    headers={"X-Flagedge-Env": other(env)})
                    assert_only(env, sneaky.text)
                    if kind == "client":
                        for path in ("/v1/explain/shared", f"/v1/explain/secret-{other(env)}"):
                            r = c.post(path, json={})
                            assert r.status_code == 403, path
                            assert ofrep_error_body(r)["errorCode"] == "FORBIDDEN"
                        for path in ("/v1/rules", "/v1/envs"):
                            r = c.get(path)
                            assert r.status_code == 403 and "only-in" not in r.text, path
                        continue
                    rules = c.get("/v1/rules")
                    assert rules.status_code == 200
                    assert set(rules.json()["flags"]) == {"shared", f"secret-{env}"}
                    assert_only(env, rules.text)
                    explained = c.post("/v1/explain/shared", json={"context": {"plan": "pro"}})
                    assert explained.status_code == 200 and explained.json()["env"] == env
                    assert_only(env, explained.text)
                    hidden = c.post(f"/v1/explain/secret-{other(env)}", json={})
                    assert hidden.status_code == 404 and "only-in" not in hidden.text
                    listed = c.get("/v1/envs")
                    assert set(listed.json()["envs"]) == {env}  # admin keys too
                    assert_only(env, listed.text)


def test_query_keys_and_tokens_only_on_stream_urls(two_envs: TwoEnvs) -> None:
    s = two_envs.server
    key = two_envs.key("alpha", "admin")
    token = stream_token(two_envs, "alpha", "admin")
    with http(s, None) as c:
        for param in ({"key": key}, {"token": token}):
            for method, path in (("POST", BULK), ("POST", f"{BULK}/shared"),
                                 ("POST", "/v1/explain/shared"), ("GET", "/v1/rules"),
                                 ("GET", "/v1/envs"), ("GET", "/ofrep/v1/configuration")):
                r = c.request(method, path, params=param, json={} if method == "POST" else None)
                assert r.status_code == 401, (method, path, list(param))
                assert ofrep_error_body(r)["errorCode"] == "UNAUTHORIZED"
                assert "only-in" not in r.text


def test_tampered_forged_and_expired_tokens_are_refused(two_envs: TwoEnvs) -> None:
    s = two_envs.server
    token = stream_token(two_envs, "alpha")
    payload_b64, mac_b64 = token.split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)).decode()
    version, scope, env, kind, key_id, window = payload.split("|")
    assert (version, scope, env, kind) == ("v2", "events", "alpha", "client")
    beta_id = hash_key(two_envs.key("beta", "client"))[:12]

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    head = f"{version}|{scope}"
    tampered = {
        "env": f"{b64(f'{head}|beta|{kind}|{key_id}|{window}')}.{mac_b64}",
        "kind": f"{b64(f'{head}|{env}|server|{key_id}|{window}')}.{mac_b64}",
        "key id": f"{b64(f'{head}|{env}|{kind}|{beta_id}|{window}')}.{mac_b64}",
        "window": f"{b64(f'{head}|{env}|{kind}|{key_id}|{int(window) + 1}')}.{mac_b64}",
        "extra field": f"{b64(f'{head}|{env}|{kind}|{key_id}|{window}|x')}.{mac_b64}",
        "scope": f"{b64(f'{version}|rules|{env}|{kind}|{key_id}|{window}')}.{mac_b64}",
        "old format": f"{b64(f'{env}|{kind}|{key_id}|{window}')}.{mac_b64}",
        "signature bit": f"{payload_b64}.{mac_b64[:-2]}{'A' if mac_b64[-2] != 'A' else 'B'}{mac_b64[-1]}",
        "no signature": f"{payload_b64}.",
        "signature only": f".{mac_b64}",
        "truncated": token[:-5],
        "not base64": f"{payload_b64}!.{mac_b64}",
        "two dots": f"{token}.{mac_b64}",
        "empty": "",
        "api key as token": two_envs.key("alpha", "client"),
    }
    # Signed correctly, but with a secret other than the shared one.
    tampered["foreign secret"] = StreamTokens(b"not-the-secret" * 3).issue(env, kind, key_id)
    # Signed with the real secret (read from Redis, as a replica would): only the current and
    # the previous window are accepted.
    secret = s.redis_client.get(layout.SECRET)
    assert secret
    minted = StreamTokens(secret, ttl=86_400)
    now = minted.window()
    assert str(now) == window  # the proxy signs with the shared secret and a 24 h window
    tampered["expired (two windows ago)"] = minted.issue(env, kind, key_id, window=now - 2)
    tampered["from the future"] = minted.issue(env, kind, key_id, window=now + 1)
    with http(s, None, timeout=5) as c:
        for name, bad in tampered.items():
            for path in STREAMS:
                r = c.get(path, params={"token": bad})
                assert r.status_code == 401, (name, path, r.status_code)
                assert ofrep_error_body(r)["errorCode"] == "UNAUTHORIZED", name
    # Control: the genuine token and the previous window's work (on the client streams).
    for good in (token, minted.issue(env, kind, key_id, window=now - 1)):
        with http(s, None, timeout=5) as c, c.stream("GET", "/ofrep/v1/events",
                                                     params={"token": good}) as r:
            assert r.status_code == 200


async def test_streams_deliver_only_their_environment(two_envs: TwoEnvs) -> None:
    s = two_envs.server
    ctx = b64_context({"targetingKey": "u", "plan": "pro"})
    token = stream_token(two_envs, "alpha")
    akey, askey = two_envs.key("alpha", "client"), two_envs.key("alpha", "server")
    bkey = two_envs.key("beta", "client")
    async with httpx.AsyncClient(base_url=s.url, timeout=httpx.Timeout(10, read=None)) as c:
        # A token opens the events stream only; a client key does not open the rules stream;
        # a server key is not taken in a URL.
        for path in ("/v1/stream/rules", "/v1/stream/evaluated"):
            r = await c.get(path, params={"token": token, "context": ctx})
            assert r.status_code == 401, path
        r = await c.get("/v1/stream/rules", headers={"Authorization": f"Bearer {akey}"})
        assert r.status_code == 403
        assert (await c.get("/v1/stream/rules", params={"key": askey})).status_code == 401
        async with Stream(c, "/ofrep/v1/events", params={"token": token}) as ev_tok, \
                Stream(c, f"/ofrep/v1/events?key={akey}") as ev_key, \
                Stream(c, "/v1/stream/evaluated", key=akey, params={"context": ctx}) as eva, \
                Stream(c, f"/v1/stream/evaluated?key={akey}&context={ctx}") as eva_key, \
                Stream(c, "/v1/stream/rules", key=askey) as rules, \
                Stream(c, "/v1/stream/rules", key=askey) as rules_key, \
                Stream(c, "/ofrep/v1/events", key=bkey) as beta_events:
            for first in (await eva.next(), await eva_key.next(), await rules.next(),
                          await rules_key.next()):
                assert first.event == "put"
                assert_only("alpha", first.data)
            for st in (ev_tok, ev_key, beta_events):
                await st.next(data_only=False)  # the retry/id preamble
            # A change to beta reaches beta's stream, and none of alpha's.
            doc = env_doc("beta")
            doc["flags"]["shared"]["variants"]["a"] = "beta-a2"
            doc["flags"]["shared"]["targeting"] = {}
            v_beta = await asyncio.to_thread(s.push, doc, "beta")
            assert vid(await beta_events.next()) == v_beta
            # Then a change to alpha: the first thing every alpha stream sees is alpha's.
            doc = env_doc("alpha")
            doc["flags"]["shared"]["variants"]["a"] = "alpha-a2"
            doc["flags"]["shared"]["targeting"] = {}
            v_alpha = await asyncio.to_thread(s.push, doc, "alpha")
            for st in (ev_tok, ev_key, eva, eva_key, rules, rules_key):
                got = await st.next()
                assert vid(got) == v_alpha, (st.url, got.id, got.data[:200])
                assert "beta" not in got.data, got.data[:300]
                if st in (eva, eva_key, rules, rules_key):  # they carry values: alpha's new one
                    assert "alpha-a2" in got.data, got.data[:300]
