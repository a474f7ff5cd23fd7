"""What an edge proxy hands out and shows the internet (issue 20, items 8 and 9), on real
`flagedge serve` processes and a real redis-server:

- stream tokens open only the OFREP events stream, only while their key is live; ``?key=``
  takes client keys only;
- offline, the token secret is ``stream_secret``/FLAGEDGE_SECRET (never derived from the
  keys file); `flagedge keys export -o` writes a 0600 file;
- tokens minted before Redis lost its data (and recreated ``flagedge:secret``) still open the
  events stream;
- /metrics can require a ``metrics_key``; /readyz says a status and a short reason, never a
  Redis error, address or password.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from proxy.storage import layout
from tests.integration.test_cli_publish import flagedge
from tests.redis_server import free_port, wait_until

pytestmark = pytest.mark.integration

BULK = "/ofrep/v1/evaluate/flags"
EVENTS = "/ofrep/v1/events"
DOC = {"flags": {"f": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"}}}
CTX = "e30"  # base64url of {}


def token_of(server, key: str) -> str:
    r = httpx.post(f"{server.url}{BULK}", json={}, headers={"Authorization": f"Bearer {key}"},
                   timeout=5.0)
    assert r.status_code == 200, r.text
    uri = r.json()["eventStreams"][0]["endpoint"]["requestUri"]
    assert urlsplit(uri).path == EVENTS
    return parse_qs(urlsplit(uri).query)["token"][0]


def open_status(server, path: str, **params: str) -> tuple[int, dict]:
    """Status of a stream opened with ``params`` (closed at once) and, unless 200, its body."""
    with httpx.Client(base_url=server.url, timeout=5.0) as c, \
            c.stream("GET", path, params=params) as r:
        if r.status_code == 200:
            return 200, {}
        r.read()
        return r.status_code, r.json()


def test_server_key_token_opens_only_the_events_stream(proxy_server):
    proxy_server.push(DOC)
    server_key = proxy_server.create_key("server")
    token = token_of(proxy_server, server_key)
    assert open_status(proxy_server, EVENTS, token=token)[0] == 200
    for path, extra in (("/v1/stream/rules", {}), ("/v1/stream/evaluated", {"context": CTX})):
        status, body = open_status(proxy_server, path, token=token, **extra)
        assert status == 401, (path, status, body)
        assert body["errorCode"] == "UNAUTHORIZED" and "/ofrep/v1/events" in body["errorDetails"]
    # A client key's token neither opens the evaluated stream (it takes API keys only).
    client_token = token_of(proxy_server, proxy_server.create_key("client"))
    assert open_status(proxy_server, "/v1/stream/evaluated", token=client_token,
                       context=CTX)[0] == 401
    assert open_status(proxy_server, EVENTS, token=client_token)[0] == 200


def test_token_of_a_revoked_key_is_refused_on_reopen(proxy_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    token = token_of(proxy_server, key)
    assert open_status(proxy_server, EVENTS, token=token)[0] == 200
    proxy_server.revoke_key(key)
    wait_until(lambda: not proxy_server.key_works(key), timeout=10, what="revocation")
    status, body = open_status(proxy_server, EVENTS, token=token)
    assert status == 401 and "revoked" in body["errorDetails"], body


def test_query_key_takes_client_keys_only(proxy_server):
    proxy_server.push(DOC)
    client = proxy_server.create_key("client")
    server = proxy_server.create_key("server")
    admin = proxy_server.create_key("admin")
    assert open_status(proxy_server, EVENTS, key=client)[0] == 200
    for raw, path in ((server, "/v1/stream/rules"), (server, EVENTS), (admin, EVENTS)):
        status, body = open_status(proxy_server, path, key=raw)
        assert status == 401, (path, status)
        assert "Authorization header" in body["errorDetails"], body
    # The same server key in the header opens the rules stream.
    with httpx.Client(base_url=proxy_server.url, timeout=5.0) as c, c.stream(
            "GET", "/v1/stream/rules", headers={"Authorization": f"Bearer {server}"}) as r:
        assert r.status_code == 200


def export_keys(redis_server, path: Path) -> None:
    done = flagedge("keys", "export", "-o", str(path), url=redis_server.url)
    assert done.returncode == 0, done.stderr


def test_keys_export_file_is_private(proxy_server, redis_server, tmp_path):
    proxy_server.create_key("client")
    out = tmp_path / "keys.json"
    export_keys(redis_server, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # An existing, world-readable file is tightened too.
    out.chmod(0o644)
    export_keys(redis_server, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert orjson.loads(out.read_bytes())["keys"]


def offline_files(proxy_server, redis_server, tmp_path):
    """A client key, the keys file exported from Redis and a flags file: what offline
    `serve --flags --keys` runs on."""
    key = proxy_server.create_key("client")
    keys_file = tmp_path / "keys.json"
    export_keys(redis_server, keys_file)
    flags = tmp_path / "flags.json"
    flags.write_bytes(orjson.dumps(DOC))
    return key, keys_file, flags


def test_offline_token_secret_is_stream_secret_not_the_keys_file(proxy_server, proxy_factory,
                                                                  redis_server, tmp_path):
    key, keys_file, flags = offline_files(proxy_server, redis_server, tmp_path)

    def offline(secret: str):
        return proxy_factory(redis=None, wait="readyz",
                             extra_args=["--flags", str(flags), "--keys", str(keys_file)],
                             environ={"FLAGEDGE_SECRET": secret})

    a, b, other = offline("one-secret-" * 3), offline("one-secret-" * 3), offline("other-" * 4)
    token = token_of(a, key)
    assert open_status(a, EVENTS, token=token)[0] == 200
    assert open_status(b, EVENTS, token=token)[0] == 200  # same secret: another process
    status, body = open_status(other, EVENTS, token=token)  # same keys file, other secret
    assert status == 401 and "invalid" in body["errorDetails"], body
    assert open_status(a, EVENTS, token=token_of(other, key))[0] == 401


def test_offline_workers_share_a_random_secret_and_warn(proxy_server, proxy_factory,
                                                       redis_server, tmp_path):
    key, keys_file, flags = offline_files(proxy_server, redis_server, tmp_path)
    server = proxy_factory(redis=None, wait="readyz", extra_args=[
        "--flags", str(flags), "--keys", str(keys_file), "--workers", "2"])
    assert "no stream_secret (FLAGEDGE_SECRET) set" in server.logs()
    # Fresh connections land on either worker: each accepts the other's tokens.
    for _ in range(8):
        assert open_status(server, EVENTS, token=token_of(server, key))[0] == 200


async def test_token_from_before_redis_data_loss_still_opens_events(proxy_server,
                                                                     redis_server):
    proxy_server.push(DOC)
    key = proxy_server.create_key("client")
    token = token_of(proxy_server, key)
    before = proxy_server.redis_client.get(layout.SECRET)
    redis_server.restart(empty=True)
    proxy_server._redis_client = None  # a fresh client on the restarted server
    wait_until(lambda: proxy_server.logs().count("redis lost its data") == 1, timeout=20,
               what="the proxy to see Redis's data loss")
    after = proxy_server.redis_client.get(layout.SECRET)
    assert after and after != before  # the secret was recreated
    assert proxy_server.key_works(key)  # known keys are kept after a loss
    assert open_status(proxy_server, EVENTS, token=token)[0] == 200
    # New tokens are signed with the new secret, and work too.
    assert open_status(proxy_server, EVENTS, token=token_of(proxy_server, key))[0] == 200


def test_metrics_key_guards_metrics_and_readyz_details(proxy_factory):
    server = proxy_factory(extra_args=["--metrics-key", "scrape-me-123"])
    server.push(DOC, wait=False)  # its wait reads versions off /readyz, hidden here
    good = {"Authorization": "Bearer scrape-me-123"}
    with httpx.Client(base_url=server.url, timeout=5.0) as c:
        wait_until(lambda: c.get("/readyz", headers=good).json().get("envs") == {"test": 1},
                   timeout=10, what="version 1 served")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me-123"},
                        {"Authorization": "Bearer scrape-me-1234"}):
            r = c.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["errorCode"] == "UNAUTHORIZED" and "flagedge_" not in r.text
        r = c.get("/metrics", headers=good)
        assert r.status_code == 200 and "flagedge_ruleset_version" in r.text
        assert c.get("/readyz").json() == {"status": "ok"}  # no env names nor versions
        assert c.get("/readyz", headers=good).json()["envs"] == {"test": 1}


def assert_says_nothing_internal(body: str, *secrets: str) -> None:
    for bad in ("127.0.0.1", "Error", "refused", "Connection", *secrets):
        assert bad not in body, (bad, body)


def test_readyz_names_no_redis_address_or_password(proxy_factory, redis_server):
    dead_port = free_port()
    unreachable = proxy_factory(redis=None, extra_args=[
        "--redis", f"redis://:hunter2-pw@127.0.0.1:{dead_port}/0"])
    wait_until(lambda: "redis down" in unreachable.logs(), timeout=10, what="a failed connect")
    r = httpx.get(f"{unreachable.url}/readyz", timeout=5.0)
    assert r.status_code == 503
    body = r.json()
    assert set(body) <= {"status", "reason", "envs"}, body  # envs: /metrics is open here
    assert (body["status"], body["reason"]) == ("unavailable",
                                                "redis unreachable: no rules loaded yet")
    assert_says_nothing_internal(r.text, str(dead_port), "hunter2")

    server = proxy_factory()
    server.push(DOC)
    redis_server.stop()
    try:
        wait_until(lambda: httpx.get(f"{server.url}/readyz").json()["status"] == "degraded",
                   timeout=15, what="readyz degraded")
        r = httpx.get(f"{server.url}/readyz", timeout=5.0)
        assert r.json()["reason"] == "redis unreachable; stale: 1 environment", r.text
        assert_says_nothing_internal(r.text, str(redis_server.port))
        # The details are in the log.
        assert str(redis_server.port) in server.logs()
    finally:
        redis_server.start()


@pytest.fixture(autouse=True)
def _umask_world_readable():
    """A umask that would leave a plainly created file world-readable, as on most hosts."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("workers", [1, 2])
def test_admin_port_serves_metrics_and_readiness_apart(proxy_factory, workers):
    admin_port = free_port()
    server = proxy_factory(extra_args=["--admin-port", str(admin_port),
                                       "--workers", str(workers)])
    server.push(DOC, wait=False)
    key = server.create_key("client")
    admin = f"http://127.0.0.1:{admin_port}"
    wait_until(lambda: httpx.get(f"{admin}/readyz").json().get("envs") == {"test": 1},
               timeout=10, what="version 1 served")
    # Fresh connections: with --workers 2 the kernel hands them to either worker.
    for _ in range(6):
        assert httpx.get(f"{server.url}/metrics").status_code == 404
        public = httpx.get(f"{server.url}/readyz")
        assert public.json() == {"status": "ok"}  # no environments on the public port
        scrape = httpx.get(f"{admin}/metrics")
        assert scrape.status_code == 200 and 'flagedge_ruleset_version{env="test"}' in scrape.text
        assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
        # Only the admin routes there; evaluations stay on the main port.
        r = httpx.post(f"{admin}{BULK}", json={}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404
        r = httpx.post(f"{server.url}{BULK}", json={},
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    # The public port's requests are counted on the admin port's scrape.
    assert 'route="/ofrep/v1/evaluate/flags"' in httpx.get(f"{admin}/metrics").text
    assert server.stop() in (0, None)
