"""TCP forwarding for tests that put a network between two real processes: a cut link
(tests/integration/test_provider.py) or a slow one (tests/integration/test_replicas.py)."""

from __future__ import annotations

import contextlib
import socket
import time


def pipe(src: socket.socket, dst: socket.socket, delay: float = 0.0) -> None:
    """Copy ``src`` to ``dst`` until either side closes, holding each chunk ``delay`` seconds
    (latency, not a bandwidth limit: chunks keep their order); then shut both down."""
    try:
        while chunk := src.recv(65536):
            if delay:
                time.sleep(delay)  # the latency being simulated, not a wait for a condition
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
