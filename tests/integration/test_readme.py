"""The README's shell examples work as written.

A ```sh block preceded by ``<!-- test: KIND [expect=TEXT] -->`` is run here with bash
(``-euo pipefail``), in document order, in a scratch directory that has the repository's
``config/``, with ``flagedge`` on PATH:

- ``offline``: needs nothing else (validate);
- ``redis``: ``FLAGEDGE_REDIS_URL`` points at the test redis-server;
- ``server``: a real `flagedge serve` on env ``dev`` (the README's ``http://localhost:8080``
  becomes its URL), with ``$KEY`` / ``$SERVER_KEY`` keys of that env;
- ``stream``: a server block that holds an SSE stream: read until TEXT arrives, then stopped.

Each block must exit 0 and print TEXT when given; no block may print a traceback, nor an
OFREP ``errorCode`` unless TEXT names one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_server import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- test: (\w+)(?: expect=(.*?))? -->$")
KINDS = {"offline", "redis", "server", "stream"}


@dataclass
class Block:
    line: int
    kind: str
    expect: str | None
    code: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind})"


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out: list[Block] = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m:
            continue
        assert m.group(1) in KINDS, f"README.md:{i + 1}: unknown test kind {m.group(1)!r}"
        j = i + 1
        while not lines[j].strip():
            j += 1
        assert lines[j].strip() == "```sh", f"README.md:{i + 1}: marker not before a sh block"
        end = lines.index("```", j + 1)
        out.append(Block(j + 1, m.group(1), m.group(2), "\n".join(lines[j + 1:end]) + "\n"))
    return out


def scratch_dir(tmp_path: Path) -> Path:
    work = tmp_path / "readme"
    work.mkdir()
    (work / "config").symlink_to(ROOT / "config")
    return work


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLAGEDGE_AUTHOR"] = "readme-test"
    env.update(extra)
    return env


def check(block: Block, code: int | None, output: str) -> None:
    where = f"{block}:\n{block.code}\n--- output ---\n{output[-3000:]}"
    if block.kind != "stream":
        assert code == 0, f"exit {code} from {where}"
    assert "Traceback" not in output, where
    if block.expect is not None:
        assert block.expect in output, f"expected {block.expect!r} from {where}"
    if "errorCode" not in (block.expect or ""):
        assert '"errorCode"' not in output, where


def run_block(block: Block, cwd: Path, env: dict[str, str], url: str | None = None) -> None:
    code = block.code.replace("http://localhost:8080", url) if url else block.code
    cmd = ["bash", "-euo", "pipefail", "-c", code]
    if block.kind != "stream":
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        check(block, done.returncode, done.stdout + done.stderr)
        return
    # A stream never ends by itself: read until the expected text arrives, then stop it.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_until(lambda: block.expect in "".join(chunks) or proc.poll() is not None,
                   timeout=15, interval=0.05, what=f"{block} to print {block.expect!r}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        reader.join(10)
    check(block, None, "".join(chunks))


def test_readme_marks_examples_of_every_kind():
    kinds = [b.kind for b in blocks()]
    assert all(kinds.count(k) >= 1 for k in KINDS), kinds
    assert all(b.expect for b in blocks() if b.kind == "stream")


def test_offline_examples(tmp_path):
    work = scratch_dir(tmp_path)
    for block in blocks():
        if block.kind == "offline":
            run_block(block, work, base_env())


@pytest.mark.integration
def test_redis_and_server_examples(proxy_factory, redis_server, tmp_path):
    server = proxy_factory(env="dev")
    # As `make run` leaves it: the demo flags at version 1 of env dev, and keys.
    assert server.push((ROOT / "config" / "flags.json").read_bytes()) == 1
    env = base_env(FLAGEDGE_REDIS_URL=redis_server.url, KEY=server.create_key("client"),
                   SERVER_KEY=server.create_key("server"))
    work = scratch_dir(tmp_path)
    ran = 0
    for block in blocks():
        if block.kind != "offline":
            run_block(block, work, env, server.url)
            ran += 1
    assert ran >= 10
    # The README's pushes and rollback reached the server: version 1, then 2, then 3.
    server.wait_version(3)
