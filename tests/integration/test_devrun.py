"""`make run` (``python -m proxy.dev.devrun``) as a developer uses it: it seeds its own
redis-server, prints a client key the proxy accepts, and stopping it by a signal stops the
proxy and the redis-server too (no orphan left behind)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.redis_server import free_port, wait_until

pytestmark = pytest.mark.integration


def printed_key(output: Path, kind: str = "client") -> str | None:
    found = re.search(rf"{kind} key (fe_{kind}_[A-Za-z0-9_\-]+)", output.read_text())
    return found.group(1) if found else None


def evaluates(port: int, api_key: str) -> bool:
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags",
                       json={"context": {"targetingKey": "user-1"}},
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=2.0)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and bool(r.json().get("flags"))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_proxy_and_its_redis_server(tmp_path, stop):
    port = free_port()
    output = tmp_path / "devrun.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    # Not from the repository: the demo flags are found next to the code, not in the cwd.
    with output.open("wb") as sink:
        # a free sync port too: 8015, make run's default, may be taken by another run
        devrun = subprocess.Popen([sys.executable, "-m", "proxy.dev.devrun", "--port", str(port),
                                   "--sync-port", str(free_port())],
                                  stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    children: list[psutil.Process] = []
    try:
        api_key = wait_until(lambda: printed_key(output), timeout=60,
                             what=f"make run's client key in {output}")
        wait_until(lambda: evaluates(port, api_key), timeout=30, what="OFREP answering")
        # the UI's address and an admin key with every role, which the admin API accepts
        assert f"http://localhost:{port}/ui/" in output.read_text()
        admin = printed_key(output, "admin")
        assert admin is not None
        envs = httpx.get(f"http://127.0.0.1:{port}/v1/admin/envs",
                         headers={"Authorization": f"Bearer {admin}"}, timeout=5)
        assert envs.status_code == 200, envs.text
        assert httpx.get(f"http://127.0.0.1:{port}/ui/signin", timeout=5).status_code == 200
        children = psutil.Process(devrun.pid).children(recursive=True)
        serve = [p for p in children if "serve" in p.cmdline()]
        redis = [p for p in children if p.name() == "redis-server"]
        assert len(serve) == 1 and len(redis) == 1, [p.cmdline() for p in children]

        devrun.send_signal(stop)
        assert devrun.wait(30) == 128 + stop
        _gone, alive = psutil.wait_procs(serve + redis, timeout=10)
        assert alive == []
        assert not evaluates(port, api_key)
    finally:  # only does something if the test failed half-way
        if devrun.poll() is None:
            devrun.kill()
            devrun.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
