"""Keys, stream tokens and contexts never reach the logs (or /metrics): a whole run at debug
level exercising every way a secret can arrive (Bearer, X-API-Key, ``?key=`` on stream and
non-stream URLs, ``?token=``, ``?context=``, context values in bodies) and every outcome
(200, 304, 400, 401, 403, 404, 413, 429, revoked keys, open streams closed by a push and by
shutdown). The server's stdout and stderr are captured whole."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import psutil
import pytest

from tests.hardening.conftest import BULK, b64_context, env_doc
from tests.integration.conftest import ProxyServer
from tests.integration.streams_support import Stream
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

MARK = "ctxmarker7f3a"  # inside context values: must never be logged either


async def test_no_key_token_or_context_value_in_server_output(proxy_factory) -> None:
    server = proxy_factory(env="alpha", extra_args=["--log-level", "debug",
                                                    "--body-limit", "4096"])
    server.push(env_doc("alpha"), env="alpha")
    ckey = server.create_key("client", env="alpha")
    skey = server.create_key("server", env="alpha")
    akey = server.create_key("admin", env="alpha")
    limited = server.create_key("client", env="alpha", rate_limit=0.5)
    doomed = server.create_key("client", env="alpha")
    unknown = "fe_client_" + "Z" * 43  # well-formed, never issued
    ctx = {"targetingKey": f"user-{MARK}", "email": f"{MARK}@example.com", "plan": "pro"}
    ctx_param = b64_context(ctx)
    bad_ctx_param = base64.urlsafe_b64encode(b'{"a": "' + MARK.encode() + b'"').decode()
    secret_values = [ckey, skey, akey, limited, doomed, unknown, ctx_param, bad_ctx_param, MARK]

    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as c:
        def bearer(k: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {k}"}

        bulk = await c.post(BULK, json={"context": ctx}, headers=bearer(ckey))
        uri = bulk.json()["eventStreams"][0]["endpoint"]["requestUri"]
        token = parse_qs(urlsplit(uri).query)["token"][0]
        secret_values.append(token)
        etag = bulk.headers["etag"]
        calls = [
            ("POST", BULK, {"json": {"context": ctx}, "headers": bearer(ckey) | {"If-None-Match": etag}}),
            ("POST", f"{BULK}/shared", {"json": {"context": ctx}, "headers": {"X-API-Key": ckey}}),
            ("POST", f"{BULK}/secret-alpha?key={ckey}&context={ctx_param}", {"json": {}}),
            ("POST", f"{BULK}?token={token}&flagConfigEtag=99", {"json": {}, "headers": bearer(ckey)}),
            ("POST", f"{BULK}/nope", {"json": {"context": ctx}, "headers": bearer(ckey)}),
            ("POST", BULK, {"json": {"context": {"targetingKey": [MARK]}}, "headers": bearer(ckey)}),
            ("POST", BULK, {"content": b'{"context": {"a": "' + MARK.encode() + b'"',
                            "headers": bearer(ckey) | {"content-type": "application/json"}}),
            ("POST", BULK, {"json": {"context": {"pad": MARK * 1000}}, "headers": bearer(ckey)}),
            ("POST", BULK, {"json": {}, "headers": bearer(unknown)}),
            ("POST", BULK, {"json": {}, "headers": {"Authorization": f"Basic {ckey}"}}),
            ("POST", "/v1/explain/shared", {"json": {"context": ctx}, "headers": bearer(ckey)}),
            ("POST", "/v1/explain/shared", {"json": {"context": ctx}, "headers": bearer(skey)}),
            ("GET", f"/v1/rules?key={skey}", {}),
            ("GET", "/v1/rules", {"headers": bearer(skey)}),
            ("GET", "/v1/envs", {"headers": bearer(akey)}),
            ("GET", f"/v1/stream/rules?token={token}", {}),
            ("GET", f"/v1/stream/evaluated?key={ckey}&context={bad_ctx_param}", {}),
            ("GET", f"/ofrep/v1/events?key={unknown}", {}),
            ("GET", f"/ofrep/v1/events?token={token}x", {}),
            # Refused (a token opens the events stream only; no server key in a URL), and
            # still never logged.
            ("GET", f"/v1/stream/evaluated?token={token}&context={ctx_param}", {}),
            ("GET", f"/v1/stream/rules?key={skey}", {}),
            ("GET", f"/no/such/route?key={ckey}&context={ctx_param}", {}),
        ]
        statuses = []
        for method, url, kw in calls:
            statuses.append((await c.request(method, url, **kw)).status_code)
        for _ in range(4):
            statuses.append((await c.post(BULK, json={}, headers=bearer(limited))).status_code)
        assert {200, 304, 400, 401, 403, 404, 413, 429} <= set(statuses), statuses

        async with Stream(c, uri) as s1, \
                Stream(c, f"/v1/stream/evaluated?key={ckey}&context={ctx_param}") as s2, \
                Stream(c, "/v1/stream/evaluated", key=ckey,
                       params={"context": ctx_param}) as s3, \
                Stream(c, "/v1/stream/rules", key=skey) as s4, \
                Stream(c, f"/ofrep/v1/events?key={doomed}") as s5:
            await s2.next()
            await s4.next()
            await s1.next(data_only=False)
            await s3.next()
            await s5.next(data_only=False)
            doc = env_doc("alpha")
            doc["flags"]["shared"]["targeting"] = {
                "if": [{"in": [MARK, {"var": "email"}]}, "a", "b"]}
            await asyncio.to_thread(server.push, doc, "alpha")
            assert (await s2.next()).event == "patch"
            await asyncio.to_thread(server.revoke_key, doomed)  # closes s5 (logged)
            await s5.wait_ended(timeout=5)
        metrics = (await c.get("/metrics")).text
    code = await asyncio.to_thread(server.stop)
    assert code is not None
    output = server.logs()
    assert "DEBUG" in output or "debug" in output.lower() or len(output) > 1000, output[-500:]
    assert "closed 1 streams of key" in output  # the revocation was logged, by id
    for secret in secret_values:
        assert secret not in output, f"{secret[:16]}... appears in the server output"
        assert secret not in metrics, f"{secret[:16]}... appears in /metrics"
    # Nor any recognisable piece of a key or token (a 16-character window of each).
    for secret in (ckey, skey, akey, token):
        body = secret.split("_")[-1] if secret.startswith("fe_") else secret
        for i in range(0, len(body) - 16, 8):
            assert body[i:i + 16] not in output, "part of a secret was logged"
    assert orjson.dumps(ctx).decode() not in output


class PasswordRedis(RedisServer):
    """A redis-server that wants a password (``--requirepass``); the URL carries it."""

    def __init__(self, workdir: Path, password: str):
        super().__init__(workdir, persist=False, extra_args=["--requirepass", password])
        self.password = password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def ping(self) -> bool:  # unauthenticated: the refusal proves it is up
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


def test_no_secret_in_the_environment_of_serve_or_its_workers(tmp_path) -> None:
    password = "redispw" + secrets.token_hex(12)
    stream_secret = "streamsecret" + secrets.token_hex(12)
    redis = PasswordRedis(tmp_path / "redis", password).start()
    server = ProxyServer(redis, tmp_path / "proxy",
                         extra_args=["--workers", "2", "--stream-secret", stream_secret])
    try:
        server.start()
        server.push(env_doc("test"))  # served: the workers did reach Redis with the password
        parent = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
        workers = [p for p in parent.children(recursive=True)
                   if "multiprocessing" in " ".join(p.cmdline())]
        assert len(workers) >= 2, [p.cmdline() for p in parent.children(recursive=True)]
        settings_files = set()
        for proc in [parent, *workers]:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            for var in environ.split(b"\0"):
                if var.startswith(b"FLAGEDGE__SETTINGS_FILE="):
                    settings_files.add(Path(var.split(b"=", 1)[1].decode()))
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert password.encode() not in environ, f"the Redis password is in {proc.pid}'s environ"
            assert stream_secret.encode() not in environ, f"stream_secret is in {proc.pid}'s environ"
            if proc is not parent:  # the parent's own command line is the caller's choice
                assert password.encode() not in cmdline and stream_secret.encode() not in cmdline
        assert all(f.stat().st_mode & 0o077 == 0 for f in settings_files)
        assert server.stop() == 0
        assert password not in server.logs() and stream_secret not in server.logs()
        # The settings file the workers read was the user's alone, and is gone with the server.
        assert settings_files and not any(f.exists() for f in settings_files), settings_files
    finally:
        server.kill()
        redis.stop()
