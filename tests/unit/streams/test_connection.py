"""One stream's bounded queue (proxy.streams.connection), without a fan-out: a connection gets
its limits, counters and snapshot callback when created, so each is a plain fake."""

from __future__ import annotations

import asyncio

from proxy.streams.connection import Connection, Limits, StreamKind
from proxy.streams.frames import PING, StreamStats


class Wiring:
    """What a fan-out would hand a connection, recording what the connection does with it."""

    def __init__(self, snapshot: bytes = b"event: put\nid: 9\ndata: {}\n\n") -> None:
        self.payload = snapshot
        self.snapshots = 0
        self.stats = StreamStats()

    def snapshot_for(self, conn: Connection) -> bytes:
        self.snapshots += 1
        conn.version = 9
        return self.payload

    def connection(self, max_queue: int = 3, max_queue_bytes: int = 1000) -> Connection:
        return Connection("prod", StreamKind.RULES, "k1", snapshot_for=self.snapshot_for,
                          limits=Limits(max_queue, max_queue_bytes), stats=self.stats)


def test_pushes_under_the_bound_queue_and_leave_in_one_payload():
    conn = Wiring().connection()
    conn.push(b"a\n\n", 1.0)
    conn.push(b"b\n\n", 2.0)
    assert conn.queued == 2 and conn.queued_bytes == 6
    assert conn.take() == (b"a\n\nb\n\n", [1.0, 2.0])
    assert conn.queued == 0 and conn.queued_bytes == 0
    assert conn.take() is None  # nothing ready


def test_take_stops_near_its_byte_limit_and_leaves_the_rest_queued():
    conn = Wiring().connection(max_queue=10)
    for part in (b"1111", b"2222", b"3333"):
        conn.push(part, None)
    assert conn.take(limit=8) == (b"11112222", [None, None])
    assert conn.take(limit=8) == (b"3333", [None])


def test_a_full_queue_is_dropped_and_the_snapshot_callback_pays_what_is_owed():
    wiring = Wiring()
    conn = wiring.connection(max_queue=2)
    conn.push(b"v1", 1.0)
    conn.push(b"v2", 2.0)
    conn.push(b"v3", 3.0)  # over the bound: everything queued goes, a snapshot is owed
    assert conn.needs_snapshot and conn.queued == 0 and conn.queued_bytes == 0
    assert wiring.stats.sse_events == {("rules", "coalesced"): 1}
    conn.push(b"v4", 4.0)  # the snapshot will carry this change too: not queued
    assert conn.queued == 0 and wiring.snapshots == 0
    assert conn.take() == (wiring.payload, [None])
    assert wiring.snapshots == 1 and not conn.needs_snapshot and conn.version == 9
    conn.push(b"v10", 10.0)  # live again
    assert conn.take() == (b"v10", [10.0])


def test_the_byte_bound_owes_a_snapshot_too():
    conn = Wiring().connection(max_queue=100, max_queue_bytes=10)
    conn.push(b"x" * 6, None)
    conn.push(b"y" * 6, None)
    assert conn.needs_snapshot and conn.queued == 0


def test_an_owed_snapshot_of_an_environment_without_rules_is_nothing():
    wiring = Wiring(snapshot=b"")
    conn = wiring.connection()
    conn.owe_snapshot()
    assert conn.take() is None and not conn.needs_snapshot and wiring.snapshots == 1


async def test_close_wakes_the_waiter_and_ends_the_stream():
    conn = Wiring().connection()
    conn.push(b"a", None)
    conn.take()
    waiter = conn.wait()
    assert not waiter.done()
    conn.close("key revoked")
    assert waiter.done() and conn.closed and conn.close_reason == "key revoked"
    conn.close("shutdown")  # the first reason stays
    assert conn.close_reason == "key revoked"
    conn.push(b"b", None)
    assert conn.take() is None and conn.queued == 0
    assert await conn.next() is None


async def test_a_push_wakes_a_waiting_stream():
    conn = Wiring().connection()
    waiter = conn.wait()
    conn.push(b"a", 5.0)
    assert waiter.done()
    assert await conn.next() == (b"a", 5.0)


def test_heartbeat_only_when_idle():
    conn = Wiring().connection()
    conn.heartbeat()
    assert conn.take() == (b"", [])  # an empty payload: the stream sends PING
    conn.push(b"a", None)
    conn.heartbeat()  # something queued: no heartbeat behind it
    assert conn.take() == (b"a", [None])


async def test_a_parked_stream_is_written_to_directly_and_not_woken():
    wiring = Wiring()
    conn = wiring.connection()
    wire: list[bytes] = []
    conn.direct = lambda body: wire.append(body) is None
    waiter = conn.wait()  # parked
    assert conn.push(b"a", 7.0) is True  # sent now: the caller counts it
    conn.heartbeat()
    assert wire == [b"a", PING]
    assert not waiter.done() and conn.queued == 0
    conn.direct = lambda body: False  # socket full: queue and wake instead
    assert conn.push(b"b", 8.0) is False  # queued: the stream counts it when it sends
    assert waiter.done() and conn.take() == (b"b", [8.0])
    assert conn.push(b"c", 9.0) is False  # not parked (the stream is sending): queued
    assert conn.queued == 1


async def test_next_hands_out_an_owed_snapshot_first():
    wiring = Wiring()
    conn = wiring.connection()
    conn.owe_snapshot()
    assert await asyncio.wait_for(conn.next(), 1) == (wiring.payload, None)
