"""A rolling restart from the previous release to this code, under load, loses no change and
no request.

Two `serve` processes run the previous release's code (a git worktree of PREVIOUS); a client
spreads OFREP bulk requests over the processes "in rotation" (as a load balancer would), an
SSE client follows /ofrep/v1/events, and changes are pushed in a loop. Each old process is
then taken out of rotation, stopped (SIGTERM, graceful), replaced on the same port by one
running this code, and put back once /readyz is 200; only then is the next one replaced.

Allowed: a request that fails at the transport level (the connection closed under it by a
process being stopped, or a pooled connection to it gone stale) is retried once against the
other process; every such retry is counted and reported. Not allowed: any answer other than
200, or a request failing twice. The stream client reconnects with Last-Event-ID when its
process goes away and must see every pushed version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from httpx_sse import aconnect_sse

from proxy.model import id_version
from proxy.release import publisher
from tests.integration.conftest import ROOT, ProxyServer
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.integration  # ~11 s

PREVIOUS = "02f0857"  # the previous release of main


def counter_doc(n: int) -> dict:
    return {"flags": {
        "counter": {"state": "ENABLED", "variants": {"v": n}, "defaultVariant": "v"},
        "static": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"},
    }}


class CodeProxy(ProxyServer):
    """A `serve` process running the code checked out at ``root``."""

    def __init__(self, redis: RedisServer, workdir: Path, root: Path, port: int | None = None):
        super().__init__(redis, workdir, port=port,
                         # --sse-coalesce-ms 0: one event per version (the test counts them)
                         environ={"PYTHONPATH": str(root), "FLAGEDGE_SSE_COALESCE_MS": "0"})
        self.root = root

    def start(self, wait: str = "healthz", timeout: float = 20.0) -> CodeProxy:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FLAGEDGE_") and k != "PYTHONPATH"}
        env.update(self.environ)
        self._log = self.log_path.open("ab")
        # cwd first on sys.path with -m: the `proxy` package comes from ``root``.
        self.proc = subprocess.Popen(self.command(), cwd=self.root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.wait_for(wait, timeout)
        return self


@contextlib.contextmanager
def previous_release() -> Path:
    try:
        sha = subprocess.run(["git", "rev-parse", "--verify", f"{PREVIOUS}^{{commit}}"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"previous release {PREVIOUS} is not in this repository: {exc.stderr}")
    path = Path(tempfile.mkdtemp(prefix="flagedge-previous-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT,
                   capture_output=True, check=True)
    try:
        # The old processes must really run the old code: it has no --keys-refresh yet.
        usage = subprocess.run([sys.executable, "-m", "proxy", "serve", "--help"], cwd=path,
                               env={**os.environ, "PYTHONPATH": str(path)},
                               capture_output=True, text=True, check=True).stdout
        assert "--keys-refresh" not in usage
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                       capture_output=True)


@dataclass
class Load:
    """The clients' view: which ports are in rotation and what happened to requests."""

    ports: list[int]
    in_rotation: set[int] = field(default_factory=set)
    ok: int = 0
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)  # stream event ids, in order
    first_after_reconnect: list[int] = field(default_factory=list)  # first version after each connect
    pushed: list[int] = field(default_factory=list)  # versions written
    reconnects: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def targets(self, first: int) -> list[int]:
        """The ports in rotation, starting at the ``first``-th (round robin)."""
        live = [port for port in self.ports if port in self.in_rotation]
        return live[first % len(live):] + live[:first % len(live)]


async def bulk_loop(load: Load, key: str, worker: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as client:
        for n in itertools.count(worker):
            if load.stop.is_set():
                return
            targets = load.targets(n)
            for attempt, port in enumerate(targets[:2]):
                try:
                    r = await client.post(f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags",
                                          json={"context": {"targetingKey": f"u{n}"}})
                except httpx.TransportError as exc:
                    if attempt == 0 and len(targets) > 1:
                        load.retried.append(f"{port}: {type(exc).__name__}")
                        continue
                    load.failed.append(f"{port}: {type(exc).__name__}: {exc}")
                    break
                if r.status_code == 200 and "flags" in r.json():
                    load.ok += 1
                else:
                    load.failed.append(f"{port}: {r.status_code} {r.text[:200]}")
                break
            await asyncio.sleep(0.005)  # pacing: two cores are shared with the servers


async def stream_loop(load: Load, key: str, last_id: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), headers=headers) as c:
        for n in itertools.count():
            if load.stop.is_set():
                return
            port = load.targets(n)[0]
            try:
                async with aconnect_sse(c, "GET", f"http://127.0.0.1:{port}/ofrep/v1/events",
                                        headers={"Last-Event-ID": last_id}) as source:
                    source.response.raise_for_status()
                    first = True
                    async for sse in source.aiter_sse():
                        version = id_version(sse.id)
                        if sse.data and version is not None:
                            last_id = sse.id
                            load.seen.append(version)
                            if first:
                                load.first_after_reconnect.append(version)
                            first = False
            except httpx.HTTPStatusError as exc:
                load.failed.append(f"stream {port}: {exc.response.status_code}")
            except httpx.TransportError:
                pass  # its process went away: reconnect below
            load.reconnects += 1
            # Reconnect only once a change was pushed meanwhile, so the resume by
            # Last-Event-ID has a missed version to replay (a quick reconnect might have none).
            mark = len(load.pushed)
            while len(load.pushed) <= mark and not load.stop.is_set():
                await asyncio.sleep(0.02)


async def push_loop(load: Load, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for n in itertools.count(2):
        if load.stop.is_set():
            return
        document = publisher.parse_document(orjson.dumps(counter_doc(n)), source="test")
        result = await asyncio.to_thread(publisher.push, client, "test", document,
                                         author="tests")
        load.pushed.append(result.version)
        await asyncio.sleep(0.3)  # a change every ~0.3 s, each its own stream event


async def replace(load: Load, old: ProxyServer, new: ProxyServer) -> None:
    load.in_rotation.discard(old.port)  # out of the load balancer first
    await asyncio.sleep(0.2)  # requests already sent to it finish (graceful stop waits too)
    assert await asyncio.to_thread(old.stop) == 0
    await asyncio.to_thread(new.start, "readyz")
    load.in_rotation.add(new.port)


async def test_rolling_restart_from_previous_release_loses_nothing(redis_server, tmp_path):
    with previous_release() as old_root:
        old = [CodeProxy(redis_server, tmp_path / f"old{i}", old_root) for i in range(2)]
        new = [CodeProxy(redis_server, tmp_path / f"new{i}", ROOT, port=o.port) for i, o in
               enumerate(old)]
        try:
            await run_rolling_restart(redis_server, old, new)
        finally:
            for server in old + new:
                try:
                    server.stop()
                except Exception:
                    server.kill()


async def run_rolling_restart(redis_server: RedisServer, old: list[CodeProxy],
                              new: list[CodeProxy]) -> None:
    first = old[0].push(counter_doc(1), wait=False)
    for server in old:
        await asyncio.to_thread(server.start, "readyz")
    key = await asyncio.to_thread(old[0].create_key)
    await asyncio.to_thread(wait_until, lambda: old[1].key_works(key), 10, 0.05, "key on old1")
    load = Load(ports=[s.port for s in old], in_rotation={s.port for s in old},
                pushed=[first])
    pushed = load.pushed
    tasks = [asyncio.create_task(bulk_loop(load, key, w)) for w in range(2)]
    tasks.append(asyncio.create_task(stream_loop(load, key, str(first))))
    pusher = asyncio.create_task(push_loop(load, redis_server.url))
    try:
        await asyncio.sleep(1.0)  # load and changes on the old release alone
        for o, n in zip(old, new, strict=True):
            await replace(load, o, n)
            await asyncio.sleep(1.0)  # mixed old/new (then new only) under load
        load.stop.set()
        await pusher
        last = pushed[-1]
        for server in new:
            await asyncio.to_thread(server.wait_version, last)
        async with asyncio.timeout(10):
            while not load.seen or load.seen[-1] < last:
                await asyncio.sleep(0.05)
    finally:
        load.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, pusher, return_exceptions=True)
    print(f"rolling restart: {load.ok} requests ok, {len(load.retried)} retried once "
          f"({load.retried}), stream reconnects {load.reconnects}, versions {pushed[0]}.."
          f"{pushed[-1]}")
    assert load.failed == []
    assert load.ok > 50
    assert load.reconnects >= 2  # the stream's process went away twice (old0, then old1)
    missing = sorted(set(range(first + 1, last + 1)) - set(load.seen))
    # The previous release's ids are bare versions; this code cannot tell which epoch or write
    # such a number was (issue 20), so a resume with one gets a single notification of the
    # newest state. The versions it covers are not lost: the client re-fetches past them.
    assert all(any(f > m for f in load.first_after_reconnect) for m in missing), (
        missing, load.first_after_reconnect)
    assert len(load.seen) == len(set(load.seen))  # Last-Event-ID: no version twice
    for server in new:
        assert "not following redis" not in server.logs()
