"""Helpers for the release-control tests: the CLI as a subprocess with a chosen author, and
the Redis-side facts the tests check (version, change-log length, a request as stored)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}


def flagedge(*args: str, url: str, author: str = "ci") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env.update(FLAGEDGE_REDIS_URL=url, FLAGEDGE_AUTHOR=author)
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def doc_file(tmp_path: Path, name: str, flags: dict[str, Any], **extra: Any) -> str:
    path = tmp_path / name
    path.write_bytes(orjson.dumps({"flags": flags, **extra}))
    return str(path)


def version(client: Any, env: str) -> int:
    return int(client.hget(f"flagedge:{{{env}}}:meta", "version") or 0)


def log_length(client: Any, env: str) -> int:
    return int(client.xlen(f"flagedge:{{{env}}}:changes"))


def stored_request(client: Any, env: str, request_id: int) -> dict[str, Any]:
    return orjson.loads(client.hget(f"flagedge:{{{env}}}:requests", str(request_id)))


def stored_flag(client: Any, env: str, key: str) -> Any:
    raw = client.hget(f"flagedge:{{{env}}}:flags", key)
    return None if raw is None else orjson.loads(raw)


def pushed(url: str, tmp_path: Path, flags: dict[str, Any], env: str = "test") -> None:
    """``flags`` pushed to ``env`` through the CLI (version 1 of a fresh environment)."""
    r = flagedge("push", doc_file(tmp_path, f"{env}-v1.json", flags), "--env", env, url=url)
    assert r.returncode == 0, r.stderr
