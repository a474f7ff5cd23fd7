"""One install at a time across test processes, and never a half-installed tree.

``make test`` runs pytest on both cores (pytest-xdist), so two workers can reach the same
one-time setup together (the browser bundle's ``npm ci``, a provider's venv). Each such step
runs under an exclusive ``flock`` on a file in ``.cache/locks/`` (:func:`install_lock`); the
second worker waits, then finds the work done. The lock is released when its holder exits,
even when it crashes. :func:`atomic_install` is the usual step: build into a temporary
folder, renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

LOCKS = Path(__file__).resolve().parent.parent / ".cache" / "locks"
COMPLETE = ".complete"  # written last: a tree without it is never used


@contextlib.contextmanager
def install_lock(name: str) -> Iterator[None]:
    LOCKS.mkdir(parents=True, exist_ok=True)
    with open(LOCKS / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_install(target: Path, build: Callable[[Path], None], lock: str) -> Path:
    """``target``, built the first time by ``build(workdir)`` into a temporary folder beside
    it that is renamed to ``target`` when complete, under ``install_lock(lock)``."""
    if (target / COMPLETE).exists():
        return target
    with install_lock(lock):
        if (target / COMPLETE).exists():  # another worker built it while this one waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".install-", dir=target.parent))
        try:
            build(work)
            (work / COMPLETE).write_text("ok\n")
            shutil.rmtree(target, ignore_errors=True)  # a broken tree left by a crash
            work.rename(target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return target
