"""The exact command the Docker image runs (no Docker engine here): the Dockerfile's
ENTRYPOINT with its ENV, parsed from the Dockerfile, against the test redis-server; its
HEALTHCHECK command verbatim; then SIGTERM for a clean exit, as `docker stop` does."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.dockerfile import instructions
from tests.redis_server import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions():
        if word != "ENV":
            continue
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
        else:
            env.update(t.split("=", 1) for t in tokens)
    return env


def exec_form(word: str) -> list[str]:
    (args,) = [a for w, a in instructions() if w == word]
    if word == "HEALTHCHECK":
        args = args[args.index("CMD") + len("CMD"):].strip()
    command = json.loads(args)
    assert isinstance(command, list), f"{word} must be exec form"
    return command


def container_environ(extra: dict[str, str]) -> dict[str, str]:
    """The image's ENV plus `docker run -e` settings; `python`/`flagedge` from this venv."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return {**base, **image_env(), **extra}


@pytest.mark.integration
def test_entrypoint_serves_healthcheck_passes_and_sigterm_exits_cleanly(redis_server, tmp_path):
    import redis

    from proxy.release import publisher

    client = redis.Redis.from_url(redis_server.url)
    publisher.push(client, "prod", publisher.parse_file(ROOT / "config" / "flags.json"))
    client.close()

    port = free_port()  # `docker run -e FLAGEDGE_PORT=...`; the image's default is 8080
    environ = container_environ({"FLAGEDGE_REDIS_URL": redis_server.url,
                                 "FLAGEDGE_PORT": str(port)})
    healthcheck = exec_form("HEALTHCHECK")
    workdir = tmp_path / "app"  # not the repository: the image needs nothing from it
    workdir.mkdir()

    # Nothing listens yet: the health check must fail (it can fail).
    before = subprocess.run(healthcheck, env=environ, cwd=workdir, capture_output=True, timeout=30)
    assert before.returncode != 0

    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(exec_form("ENTRYPOINT"), env=environ, cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, interval=0.1, what="the image's command to be ready")
        check = subprocess.run(healthcheck, env=environ, cwd=workdir, capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        envs = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["envs"]
        assert envs.get("prod", 0) >= 1

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    # A clean SIGTERM exits 0, in a container or not (serve catches uvicorn's re-raise).
    assert code == 0, output
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output, output
    assert "flagedge stopped" in output, output
