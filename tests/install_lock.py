"""One install at a time across test processes.

``make test`` runs pytest on both cores (pytest-xdist), so two workers can reach the same
one-time setup together (the browser bundle's ``npm ci``, a provider's venv). Each such step
runs under an exclusive ``flock`` on a file in ``.cache/locks/``; the second worker waits,
then finds the work done. The lock is released when its holder exits, even when it crashes.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

LOCKS = Path(__file__).resolve().parent.parent / ".cache" / "locks"


@contextlib.contextmanager
def install_lock(name: str) -> Iterator[None]:
    LOCKS.mkdir(parents=True, exist_ok=True)
    with open(LOCKS / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
