"""bench/sse.py's arithmetic and its client's reading of streams: a stream is open only once
its head and first frame arrived, a round stamps the first event after it was armed (never a
heartbeat), the baseline's frames have the size asked, and each goal row passes or fails on
the figure it names."""

from __future__ import annotations

import asyncio

from tests.bench_module import load

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


async def test_a_stream_opens_on_its_first_frame_and_stamps_the_armed_event():
    client = load("sse_client")
    round_ = client.Round(1, client.MARKERS["events"])
    reader = client.Reader(client.request("events", 0, "KEY"), round_)
    wire = Transport()
    reader.connection_made(wire)
    assert b"Authorization: Bearer KEY" in wire.sent[0]
    reader.data_received(HEAD[:20])
    reader.data_received(HEAD[20:] + b"11\r\nretry: 3000\n")
    assert round_.ready == 0  # the head, not yet the first frame
    reader.data_received(b"id: 1-x\n\n\r\n")
    assert round_.ready == 1 and round_.all_ready.is_set()
    event = b"event: message\nid: 2-y\ndata: {}\n\n"
    reader.data_received(event)  # not armed: no round is measured
    assert reader.got_at == 0 and round_.got == 0
    round_.armed = True
    reader.data_received(b"9\r\n: ping\n\n\r\n")  # a heartbeat is no event
    assert round_.got == 0
    reader.data_received(b"%x\r\n%b\r\n" % (len(event), event))
    assert reader.got_at > 0 and round_.got == 1 and round_.all_got.is_set()
    assert round_.frame_bytes == len(event)
    stamped = reader.got_at
    reader.data_received(event)  # a second event in the same round changes nothing
    assert reader.got_at == stamped and round_.got == 1


async def test_a_refused_stream_counts_as_failed_not_open():
    client = load("sse_client")
    round_ = client.Round(1, client.MARKERS["rules"])
    reader = client.Reader(client.request("rules", 0, ""), round_)
    reader.connection_made(Transport())
    reader.data_received(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n{}")
    assert round_.failed == 1 and round_.ready == 0


async def test_evaluated_clients_each_ask_with_their_own_context():
    client = load("sse_client")
    paths = {client.stream_path("evaluated", i) for i in range(3)}
    assert len(paths) == 3 and all(p.startswith("/v1/stream/evaluated?context=") for p in paths)


def test_baseline_frames_have_the_size_asked():
    baseline = load("sse_baseline")
    frame = baseline.frame(b"patch", b"1-0", 225, b"context=abc")
    assert len(frame) == 225 and frame.startswith(b"event: patch\nid: 1-0\ndata: context=abc")
    assert frame.endswith(b"x\n\n")
    assert baseline.frame(b"message", b"1-0", 10) == b"event: message\nid: 1-0\ndata: \n\n"


async def test_baseline_wakes_every_waiter_once_per_entry():
    baseline = load("sse_baseline")
    changes = baseline.Changes()
    first = changes.event
    waiters = [asyncio.create_task(first.wait()) for _ in range(3)]
    changes.publish(b"5-0")
    await asyncio.gather(*waiters)
    assert changes.entry_id == b"5-0" and not changes.event.is_set()  # the next one waits


def measured(sse, server: str, stream: str, n: int, round_p99s: list[float],
             kb: float = 10.0):
    m = sse.Measured(server, stream, n)
    for p in round_p99s:
        m.latencies_ms += [p] * 100
        m.round_p99_ms.append(p)
    m.rss_before_kb, m.rss_open_kb = 0, round(kb * n)
    return m


def test_events_goals_pass_and_fail_on_their_own_figures():
    sse = load("sse")
    base = measured(sse, "baseline", "events", 10_000, [150.0, 160.0, 600.0])
    ok = sse.case_rows(measured(sse, "flagedge", "events", 10_000, [100.0, 110.0, 120.0]), base)
    assert [(r.what.split(": ")[1], r.passed) for r in ok] == [
        ("p99 Redis write -> all notified", True), ("server RSS per stream", True)]
    slow = sse.case_rows(measured(sse, "flagedge", "events", 10_000, [100.0, 100.0, 201.0],
                                  kb=20.5), base)
    assert [r.passed for r in slow] == [False, False]  # the pooled p99 counts every round
    small = sse.case_rows(measured(sse, "flagedge", "events", 1_000, [49.0, 51.0, 49.0]),
                          measured(sse, "baseline", "events", 1_000, [20.0]))
    assert [(r.measured, r.passed) for r in small] == [(51.0, False)]  # no RSS row at 1,000


def test_stream_ratio_is_read_on_the_median_write_of_each_side():
    sse = load("sse")
    base = measured(sse, "baseline", "evaluated", 10_000, [100.0, 100.0, 900.0])
    (row,) = sse.case_rows(measured(sse, "flagedge", "evaluated", 10_000, [190.0, 200.0, 210.0]),
                           base)
    assert row.measured == 2.0 and row.passed  # 200 / 100: the baseline's slow write aside
    (row,) = sse.case_rows(measured(sse, "flagedge", "evaluated", 10_000, [190.0, 201.0, 210.0]),
                           base)
    assert not row.passed


def test_the_default_cases_are_the_goals_and_clients_apply_to_every_stream():
    sse = load("sse")
    assert sse.cases("events,rules,evaluated", None) == [
        ("events", 1_000), ("events", 10_000), ("rules", 10_000), ("evaluated", 10_000)]
    assert sse.cases("events,rules,evaluated", "1000") == [  # make bench's quick run
        ("events", 1_000), ("rules", 1_000), ("evaluated", 1_000)]
