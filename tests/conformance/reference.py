"""Run flagd's JS evaluator (``@openfeature/flagd-core`` 4.0.1) from Python.

The pinned npm packages (``package.json`` + ``package-lock.json`` next to this file) are
installed once with ``npm ci`` into a cache folder outside git, keyed by a hash of those two
files; ``driver.js`` is then fed every document and context of a run in one node process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.install_lock import atomic_install

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.js"
LOCK_FILES = ("package.json", "package-lock.json")


class ReferenceUnavailable(RuntimeError):
    """node/npm missing or the pinned packages could not be installed."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flagedge" / "conformance-node"


def _lock_hash() -> str:
    h = hashlib.sha256()
    for name in LOCK_FILES:
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ReferenceUnavailable(
            f"`{tool}` is not on PATH: the conformance test needs node and npm to run flagd's "
            f"JS evaluator (install Node.js >= 18, e.g. `apt-get install nodejs npm`)"
        )
    return path


def install() -> Path:
    """Return a directory whose node_modules hold the pinned reference packages, installing
    them with ``npm ci`` the first time (atomically: concurrent runs never see half a tree)."""
    _require("node")

    def build(work: Path) -> None:
        npm = _require("npm")
        for name in LOCK_FILES:
            shutil.copy2(HERE / name, work / name)
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=work, capture_output=True, text=True, timeout=300, check=False,
        )
        if proc.returncode != 0:
            raise ReferenceUnavailable(
                f"`npm ci` of {HERE / 'package.json'} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )

    return atomic_install(cache_root() / _lock_hash(), build, "flagd-core-js")


def run_reference(requests: Sequence[dict[str, Any]], *, timeout: float = 300) -> list[dict[str, Any]]:
    """Evaluate ``requests`` (``{"id", "doc", "cases": [{"key", "context"}]}``) with the
    reference in one node process; returns one reply per request, in order."""
    prefix = install()
    node = _require("node")
    payload = b"\n".join(orjson.dumps(r) for r in requests) + b"\n"
    proc = subprocess.run(
        [node, str(DRIVER), str(prefix)],
        input=payload, capture_output=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise ReferenceUnavailable(
            f"node driver failed (exit {proc.returncode}): {proc.stderr.decode()[-3000:]}"
        )
    replies = [orjson.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(replies) != len(requests):
        raise ReferenceUnavailable(
            f"node driver answered {len(replies)} of {len(requests)} requests: "
            f"{proc.stderr.decode()[-3000:]}"
        )
    for reply in replies:
        if "driver_error" in reply:
            raise ReferenceUnavailable(f"node driver error: {reply['driver_error']}")
    return replies


def run_docs(docs: Sequence[tuple[dict[str, Any], Sequence[tuple[str, Any]]]]
             ) -> list[dict[str, Any]]:
    """Each ``(document, [(flag key, context), ...])`` through the reference, in order."""
    return run_reference([{"id": i, "doc": doc, "cases": [{"key": k, "context": c} for k, c in cases]}
                          for i, (doc, cases) in enumerate(docs)])


def run_docs_or_fail(docs: Sequence[tuple[dict[str, Any], Sequence[tuple[str, Any]]]]
                     ) -> list[dict[str, Any]]:
    """:func:`run_docs` for tests: a missing node/npm fails the test (never a skip)."""
    import pytest

    try:
        return run_docs(docs)
    except ReferenceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def js_strings(values: Sequence[Any], *, timeout: float = 60) -> list[str]:
    """``String(v)`` in node for each JSON value (after JSON's own number parsing)."""
    node = _require("node")
    script = (
        "const xs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(xs.map((x) => String(x))))"
    )
    proc = subprocess.run([node, "-e", script], input=orjson.dumps(list(values)),
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ReferenceUnavailable(f"node failed: {proc.stderr.decode()[-2000:]}")
    return orjson.loads(proc.stdout)
