"""Integration fixtures: a real `flagedge serve` (uvicorn subprocess on a free port) against
the test redis-server, with helpers to push flags, create/revoke keys and wait for versions.

Reuse: ``proxy_server`` (function scope, env ``test``) or ``proxy_factory(env=..., extra_args=...)``
for more servers or other settings; every server is stopped at the end of the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.redis_server import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class ProxyServer:
    """One `python -m proxy serve` process. ``stop()`` sends SIGTERM (graceful),
    ``kill()`` SIGKILL; ``restart()`` starts it again on the same port."""

    def __init__(self, redis: RedisServer | None, workdir: Path, *, env: str = "test",
                 extra_args: list[str] | None = None, port: int | None = None,
                 environ: dict[str, str] | None = None):
        self.redis = redis
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.extra_args = list(extra_args or [])
        self.port = port or free_port()
        self.environ = dict(environ or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"proxy-{self.port}.log"
        self._redis_client: Any = None

    # -- process ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--env", self.env, "--log-level", "info"]
        if self.redis is not None:
            cmd += ["--redis", self.redis.url]
        return cmd + self.extra_args

    def start(self, wait: str = "healthz", timeout: float = 20.0) -> ProxyServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
        env.update(self.environ)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        if wait:  # "": return at once (the caller watches the port itself)
            self.wait_for(wait, timeout)
        return self

    def wait_for(self, what: str = "healthz", timeout: float = 20.0) -> None:
        """``healthz``: the process answers; ``readyz``: rules are loaded (200)."""
        def answered() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"flagedge serve exited early:\n{self.logs()}")
            try:
                return httpx.get(f"{self.url}/{what}", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answered, timeout=timeout, interval=0.05, what=f"flagedge /{what}")

    def stop(self, timeout: float = 15.0) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        elif self.proc is not None:
            code = self.proc.returncode
        self.proc = None
        if hasattr(self, "_log"):
            self._log.close()
        return code

    def close(self) -> None:
        """Stop gracefully, or kill when that fails (fixture teardown)."""
        try:
            self.stop()
        except Exception:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, extra_args: list[str] | None = None, wait: str = "healthz") -> ProxyServer:
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start(wait=wait)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- Redis-side helpers (the write path a user would use) ---------------------------
    @property
    def redis_client(self) -> Any:
        if self._redis_client is None:
            import redis

            assert self.redis is not None, "this server has no Redis"
            self._redis_client = redis.Redis.from_url(self.redis.url)
        return self._redis_client

    def push(self, doc: dict[str, Any] | bytes, env: str | None = None, wait: bool = True) -> int:
        """Publish a flag document (as `flagedge push` does); returns the new version and, by
        default, waits until this server serves it."""
        from proxy.release import publisher

        data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        document = publisher.parse_document(data, source="test")
        result = publisher.push(self.redis_client, env or self.env, document, author="tests")
        if wait:
            self.wait_version(result.version, env)
        return result.version

    def create_key(self, kind: str = "client", env: str | None = None,
                   rate_limit: float | None = None, name: str = "test", wait: bool = True) -> str:
        from proxy.storage import keys

        raw, _record = keys.create(self.redis_client, env or self.env, kind, name,
                                   rate_limit=rate_limit)
        if wait:  # the proxy learns keys from flagedge:events
            wait_until(lambda: self.key_works(raw), timeout=10, what="key to reach the proxy")
        return raw

    def revoke_key(self, raw: str) -> None:
        from proxy.keys import hash_key
        from proxy.storage import keys

        keys.revoke(self.redis_client, hash_key(raw)[:12])

    def key_works(self, raw: str) -> bool:
        r = httpx.post(f"{self.url}/ofrep/v1/evaluate/flags", json={},
                       headers={"Authorization": f"Bearer {raw}"}, timeout=2.0)
        return r.status_code not in (401, 403)

    def versions(self) -> dict[str, int]:
        try:
            r = httpx.get(f"{self.url}/readyz", timeout=2.0)
        except httpx.HTTPError:
            return {}
        return r.json().get("envs", {}) if r.headers.get("content-type", "").startswith(
            "application/json") else {}

    def wait_version(self, version: int, env: str | None = None, timeout: float = 10.0) -> None:
        env = env or self.env
        wait_until(lambda: self.versions().get(env, -1) >= version, timeout=timeout,
                   what=f"{env} version {version} on the proxy")

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=5.0, **kwargs)


ProxyFactory = Callable[..., ProxyServer]


@pytest.fixture
def proxy_factory(redis_server: RedisServer, tmp_path: Path) -> Iterator[ProxyFactory]:
    """``proxy_factory(env="test", extra_args=[...], start=True, redis=redis_server)``."""
    servers: list[ProxyServer] = []

    def make(*, env: str = "test", extra_args: list[str] | None = None, start: bool = True,
             redis: RedisServer | str | None = "default", wait: str = "healthz",
             environ: dict[str, str] | None = None) -> ProxyServer:
        server = ProxyServer(redis_server if redis == "default" else redis,  # type: ignore[arg-type]
                             tmp_path / "proxy", env=env, extra_args=extra_args, environ=environ)
        servers.append(server)
        return server.start(wait=wait) if start else server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def proxy_server(proxy_factory: ProxyFactory) -> ProxyServer:
    """A started `flagedge serve` on env ``test`` against this test's redis-server."""
    return proxy_factory()


@pytest.fixture
async def streams_served(proxy_server: ProxyServer) -> Any:
    """A proxy with the streams tests' document pushed, and an async client on it:
    ``(server, client, first_version)``."""
    from tests.integration.streams_support import DOC, push

    v1 = await push(proxy_server, DOC)
    client = httpx.AsyncClient(base_url=proxy_server.url, timeout=httpx.Timeout(10, read=None))
    try:
        yield proxy_server, client, v1
    finally:
        await client.aclose()
