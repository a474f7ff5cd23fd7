"""The first events of a new stream: a snapshot, or with ``Last-Event-ID`` exactly the
versions the client missed (memory ring, then the Redis change stream), or a fresh ``put``
when they cannot be replayed (DESIGN §5)."""

from __future__ import annotations

from proxy.model import FlagSet
from proxy.streams.connection import Connection, StreamKind
from proxy.streams.fanout import FanOut  # fanout imports us lazily
from proxy.streams.frames import id_only, notification, rules_entry
from proxy.streams.history import Entry


async def initial(fo: FanOut, conn: Connection, last_id: int | None) -> bytes:
    """What a new connection gets before its queue: a snapshot (``put`` / id only) or,
    with ``Last-Event-ID``, exactly the versions it missed (ring, then Redis), or a
    fresh ``put`` when they cannot be replayed. Must run right after ``FanOut.open``."""
    fs = fo.store.get(conn.env)
    if fs is None or fs.version != conn.version:
        conn.needs_snapshot = fs is not None  # store moved between open and here
        return b""
    current = fs.version
    if conn.kind is StreamKind.EVALUATED:
        return await _initial_evaluated(fo, conn, fs, last_id)
    if last_id is None:
        return id_only(current) if conn.kind is StreamKind.EVENTS else fo.rules_put(fs)
    if last_id > current:  # another epoch's numbering: start over
        return notification(current, fs.updated_at) if conn.kind is StreamKind.EVENTS \
            else fo.rules_put(fs)
    if last_id == current:
        return b""
    entries = fo.changelog.since(conn.env, last_id, current)
    if entries is None and fo.redis is not None:
        entries = await _from_redis(fo, conn.env, last_id, current, fs.epoch)
    if conn.kind is StreamKind.EVENTS:
        if entries is None or len(entries) > fo.max_queue:
            # One notification covers any number of missed versions (each one makes an OFREP
            # client re-fetch): past the queue bound, coalesce as for a slow reader.
            return notification(current, fs.updated_at)
        return b"".join(notification(e.version, e.at) for e in entries)
    if entries is None or any(e.reset for e in entries):
        return fo.rules_put(fs)
    return b"".join(rules_entry(e) for e in entries)


async def _from_redis(fo: FanOut, env: str, last_id: int, current: int, epoch: str
                      ) -> list[Entry] | None:
    if fo.history is None:
        return None
    return await fo.history.entries(env, last_id, current, epoch)


async def _initial_evaluated(fo: FanOut, conn: Connection, fs: FlagSet,
                            last_id: int | None) -> bytes:
    current = fs.version
    old = None
    if last_id is not None and last_id <= current:
        old = fs if last_id == current else fo.changelog.snapshot(conn.env, last_id)
        if old is None and fo.history is not None:
            conn.pending = True  # a change arriving meanwhile makes it owe a snapshot
            try:
                old = await fo.history.flag_set_at(conn.env, fs, last_id)
            finally:
                conn.pending = False
    if old is None:
        return fo.evaluated_put(conn, fs)
    conn.results = {k: hash(v) for k, v in fo.evaluate_context(old, conn.context).items()}
    if old is fs:
        return b""
    new = fo.evaluate_context(fs, conn.context)
    diff = fo.evaluated_diff(conn, new, set(conn.results) | set(new), current)
    return diff or id_only(current)
