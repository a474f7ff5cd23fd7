"""Helpers shared by the bench scripts (run as `python bench/<name>.py`, so bench/ is on
sys.path)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path


def raise_nofile(want: int = 65_536) -> int:
    """Raise the open-file limit towards ``want`` (thousands of sockets); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM (a graceful shutdown is part of what runs), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pinned(core: int, cmd: list[str]) -> list[str]:
    """``cmd`` run on one core (taskset), when the machine has it and taskset exists."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def offline_files(tmp: Path, document: dict, env: str) -> str:
    """``tmp/flags.json`` (the document) and ``tmp/keys.json`` (one client key, hashes only)
    for an offline ``flagedge serve --flags --keys``; returns the raw client key."""
    import orjson

    from proxy.keys import KeyRecord, dump_export, generate_key, hash_key

    (tmp / "flags.json").write_bytes(orjson.dumps(document))
    key = generate_key("client")
    digest = hash_key(key)
    (tmp / "keys.json").write_bytes(dump_export({digest: KeyRecord(
        id=digest[:12], env=env, kind="client", name="bench", created_at=time.time())}))
    return key
