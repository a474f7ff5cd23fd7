"""The first events of a new stream: a snapshot, or with ``Last-Event-ID`` exactly the
versions the client missed, or a fresh ``put`` when they cannot be replayed (DESIGN §5).

The cost of a resume is bounded, because ``Last-Event-ID`` is chosen by the client and the
client key ships in browsers (issue 20): the events and evaluated streams (client keys)
resume from memory only — the ring of recent versions and snapshots — and past it get one
notification or a ``put`` of the context's results, which cost what a bulk request costs.
Only the rules stream (server keys) reads the Redis change log, at most
:data:`~proxy.streams.history.REDIS_MAX_ENTRIES` entries, shared between clients asking for
the same state, and a few reads at a time.

Everything it reads comes in as arguments: the store, the ring, the history reader and the
snapshot builders. The ring and the history are declared here as the small interfaces this
module uses (:class:`Ring`, :class:`History`: ``ChangeLog`` and ``RedisHistory`` of
:mod:`proxy.streams.history` implement them).
"""

from __future__ import annotations

import time
from typing import Protocol

from proxy.model import FlagSet, id_version, split_stream_id
from proxy.store import Store
from proxy.streams.connection import Connection, StreamKind
from proxy.streams.frames import diff_frames, id_only, notification, rules_entry
from proxy.streams.history import Entry
from proxy.streams.snapshots import Snapshots


class Ring(Protocol):
    """The recent versions kept in memory."""

    def since(self, env: str, held: str, current: int) -> list[Entry] | None:
        """Entries after state ``held`` up to version ``current``, or None when the ring
        does not hold that state and all of them."""
        ...

    def snapshot(self, env: str, held: str) -> FlagSet | None:
        """The flag set of state ``held``, when still kept."""
        ...


class History(Protocol):
    """The change log in Redis, for what the ring no longer holds (rules streams only)."""

    async def entries(self, env: str, held: str, current: int, epoch: str
                      ) -> list[Entry] | None:
        """Entries after state ``held`` up to ``current`` of ``epoch``, or None when they
        cannot be read (or not now) or ``held`` is not a state of this history."""
        ...


async def initial(conn: Connection, last_id: str | None, *, store: Store, ring: Ring,
                  history: History | None, snapshots: Snapshots) -> bytes:
    """What a new connection gets before its queue: a snapshot (``put`` / id only) or,
    with ``Last-Event-ID`` (a state id), exactly the versions it missed (ring, then Redis),
    or a fresh ``put`` when they cannot be replayed: the id is not a state this history
    passed through (another epoch, another write of that number, a bare number from an
    older server). Runs right after ``FanOut.open``; when the store has moved on since, the
    connection is owed a snapshot (its queue delivers it) and nothing is replayed here."""
    fs = store.get(conn.env)
    if fs is None or fs.state_id != conn.state_id:
        conn.needs_snapshot = fs is not None  # store moved between open and here
        return b""
    if conn.kind is StreamKind.EVALUATED:
        return _initial_evaluated(conn, fs, last_id, ring, snapshots)
    if conn.kind is StreamKind.EVENTS and (fs.boundaries or _timed(last_id)):
        return _initial_timed_events(conn, fs, last_id)
    if last_id is None:
        return id_only(fs.state_id) if conn.kind is StreamKind.EVENTS \
            else snapshots.rules_put(fs)
    if last_id == fs.state_id:
        return b""
    held = id_version(last_id)
    if conn.kind is StreamKind.EVENTS and (held is None or fs.version - held > conn.limits.max_queue):
        # One notification covers any number of missed versions, whatever their history.
        return notification(fs.state_id, fs.updated_at)
    entries = ring.since(conn.env, last_id, fs.version)
    if entries is None and history is not None and conn.kind is StreamKind.RULES:
        entries = await history.entries(conn.env, last_id, fs.version, fs.epoch)
    if entries and entries[-1].state_id != fs.state_id:
        entries = None  # the log's version N is another write than the one we serve
    if conn.kind is StreamKind.EVENTS:
        if entries is None or len(entries) > conn.limits.max_queue:
            # One notification covers any number of missed versions (each one makes an OFREP
            # client re-fetch): past the queue bound, coalesce as for a slow reader.
            return notification(fs.state_id, fs.updated_at)
        return b"".join(notification(e.state_id, e.at) for e in entries)
    if entries is None or any(e.reset for e in entries):
        return snapshots.rules_put(fs)
    return b"".join(rules_entry(e) for e in entries)


def _timed(last_id: str | None) -> bool:
    """``last_id`` names an interval between time boundaries (``VERSION-TAG~I``)."""
    return last_id is not None and split_stream_id(last_id)[1] is not None


def _initial_timed_events(conn: Connection, fs: FlagSet, last_id: str | None) -> bytes:
    """Events stream, rules with time boundaries (now or at the held id): the id of the
    current state and interval; one notification when the client held another (whatever
    came between, one re-fetch brings it up to date)."""
    now = time.time()
    current = fs.stream_id(now)
    conn.hold(fs.version, fs.state_id, fs.interval(now))
    if last_id is None:
        return id_only(current)
    return b"" if last_id == current else notification(current, fs.updated_at)


def _initial_evaluated(conn: Connection, fs: FlagSet, last_id: str | None, ring: Ring,
                       snapshots: Snapshots) -> bytes:
    if fs.boundaries or _timed(last_id):
        # What a client held at an earlier interval cannot be evaluated again (the rules read
        # the clock): the same state and interval needs nothing, anything else a fresh put.
        if last_id is None or last_id != fs.stream_id(time.time()):
            return snapshots.evaluated_put(conn, fs)
        conn.results = {k: hash(v) for k, v in snapshots.evaluate_context(fs, conn.context).items()}
        return b""
    old = None
    if last_id is not None:
        old = fs if last_id == fs.state_id else ring.snapshot(conn.env, last_id)
    if old is None:
        return snapshots.evaluated_put(conn, fs)
    conn.results = {k: hash(v) for k, v in snapshots.evaluate_context(old, conn.context).items()}
    if old is fs:
        return b""
    new = snapshots.evaluate_context(fs, conn.context)
    diff = diff_frames(conn.results, new, set(conn.results) | set(new), fs.state_id)
    return diff or id_only(fs.state_id)
