"""Revoked UI sessions (DESIGN §12): ``flagedge:ui:revoked:{sid}`` STRING "1" with a TTL
equal to the session's remaining lifetime, so the set of revoked sessions cleans itself up
and every replica checks it. One key per session: its write is a single SET (all or
nothing), its check a single EXISTS, and in a Cluster each lands on one node.
"""

from __future__ import annotations

from typing import Any

from proxy.storage import layout

REVOKED = f"{layout.PREFIX}:ui:revoked"


def revoked_key(sid: str) -> str:
    return f"{REVOKED}:{sid}"


def revoke(client: Any, sid: str, ttl_s: int) -> None:
    client.set(revoked_key(sid), "1", ex=max(1, ttl_s))


def is_revoked(client: Any, sid: str) -> bool:
    return bool(client.exists(revoked_key(sid)))
