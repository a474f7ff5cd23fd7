"""A new stream's first events (proxy.streams.resume), given a real store, ring and snapshot
builders and a fake Redis history: no fan-out involved."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.model import Change, FlagSet
from proxy.store import Store
from proxy.streams import resume
from proxy.streams.connection import Connection, Limits, StreamKind
from proxy.streams.frames import StreamStats, id_only, notification, rules_entry, rules_put
from proxy.streams.history import ChangeLog, Entry
from proxy.streams.snapshots import Snapshots

ENV = "prod"
PRO_ONLY = {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}


def document(version: int) -> dict[str, Any]:
    """Version N has flags f2..fN; ``banner`` is on for pro users from version 3 on."""
    flags: dict[str, Any] = {f"f{v}": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                       "defaultVariant": "on"} for v in range(2, version + 1)}
    flags["banner"] = {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "off", "targeting": PRO_ONLY if version >= 3 else {}}
    return {"flags": flags}


class Env:
    """An environment at ``version``: each version 2.. upserted one flag ``fN`` (and version 3
    changed ``banner``), published to the store and recorded in the ring as the fan-out does."""

    def __init__(self, version: int, ring: ChangeLog | None = None) -> None:
        self.store = Store()
        self.ring = ring or ChangeLog()
        self.snapshots = Snapshots(self.store)
        self.sets: dict[int, FlagSet] = {}
        for v in range(1, version + 1):
            fs = compile_document(document(v), version=v, epoch="e1", updated_at=1000.0 + v)
            touched = {f"f{v}"} | ({"banner"} if v == 3 else set())
            change = Change(env=ENV, version=v, reset=v == 1,
                            upserted=frozenset(fs.flags if v == 1 else touched))
            self.store.publish(ENV, fs, change)
            self.ring.record(change, fs)
            self.sets[v] = fs

    def open(self, kind: StreamKind, context: dict[str, Any] | None = None,
             max_queue: int = 64) -> Connection:
        conn = Connection(ENV, kind, "k", context, snapshot_for=self.snapshots.snapshot,
                          limits=Limits(max_queue=max_queue), stats=StreamStats(),
                          on_sent=lambda _c, _at: None)
        fs = self.store.get(ENV)
        conn.version = fs.version if fs is not None else 0  # as FanOut.open does
        return conn

    async def initial(self, conn: Connection, last_id: int | None,
                      history: resume.History | None = None) -> bytes:
        return await resume.initial(conn, last_id, store=self.store, ring=self.ring,
                                    history=history, snapshots=self.snapshots)


class FakeHistory:
    """Redis's change log: answers from the flag sets it is given, recording each question."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.asked: list[tuple[Any, ...]] = []
        self.pending_seen: list[bool] = []
        self.conn: Connection | None = None

    async def entries(self, env: str, version: int, current: int, epoch: str
                      ) -> list[Entry] | None:
        self.asked.append(("entries", env, version, current, epoch))
        return [Entry(version=v, at=2000.0 + v, upserted={f"f{v}": {"state": "ENABLED"}})
                for v in range(version + 1, current + 1)]

    async def flag_set_at(self, env: str, current: FlagSet, version: int) -> FlagSet | None:
        self.asked.append(("flag_set_at", env, current.version, version))
        if self.conn is not None:
            self.pending_seen.append(self.conn.pending)
        await asyncio.sleep(0)
        return self.env.sets.get(version)


def versions(payload: bytes) -> list[str]:
    return [line[4:] for line in payload.decode().splitlines() if line.startswith("id: ")]


# -- events and rules -------------------------------------------------------------------------
async def test_without_last_event_id_a_snapshot():
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), None) == id_only(5)
    assert await env.initial(env.open(StreamKind.RULES), None) == rules_put(env.sets[5])


async def test_last_event_id_of_the_current_version_gets_nothing():
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), 5) == b""
    assert await env.initial(env.open(StreamKind.RULES), 5) == b""


async def test_a_gap_the_ring_holds_gets_exactly_those_versions():
    env = Env(6)
    events = await env.initial(env.open(StreamKind.EVENTS), 3)
    assert events == b"".join(notification(v, 1000.0 + v) for v in (4, 5, 6))
    rules = await env.initial(env.open(StreamKind.RULES), 3)
    assert rules == b"".join(rules_entry(e) for e in env.ring.since(ENV, 3, 6) or [])
    assert versions(rules) == ["4", "5", "6"]
    assert [list(orjson.loads(line[6:])["flags"]) for line in rules.decode().splitlines()
            if line.startswith("data: ")] == [["f4"], ["f5"], ["f6"]]


async def test_a_ring_miss_without_history_gets_a_put():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))  # holds versions 9..12
    assert await env.initial(env.open(StreamKind.RULES), 3) == rules_put(env.sets[12])
    assert await env.initial(env.open(StreamKind.EVENTS), 3) == notification(12, 1012.0)


async def test_a_ring_miss_is_read_from_the_history():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    history = FakeHistory(env)
    got = await env.initial(env.open(StreamKind.EVENTS), 6, history)
    assert got == b"".join(notification(v, 2000.0 + v) for v in range(7, 13))
    assert history.asked == [("entries", ENV, 6, 12, "e1")]
    rules = await env.initial(env.open(StreamKind.RULES), 6, history)
    assert versions(rules) == [str(v) for v in range(7, 13)]
    history.asked.clear()
    await env.initial(env.open(StreamKind.RULES), 10, history)  # the ring has it: no read
    assert history.asked == []


async def test_a_last_event_id_newer_than_current_starts_over():
    """Another epoch's numbering (Redis lost its data and was re-published)."""
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), 99) == notification(5, 1005.0)
    assert await env.initial(env.open(StreamKind.RULES), 99) == rules_put(env.sets[5])


async def test_more_missed_versions_than_the_queue_holds_is_one_notification():
    env = Env(10)
    assert await env.initial(env.open(StreamKind.EVENTS, max_queue=3), 5) == \
        notification(10, 1010.0)
    near = await env.initial(env.open(StreamKind.EVENTS, max_queue=3), 7)
    assert versions(near) == ["8", "9", "10"]


async def test_a_reset_in_the_gap_gets_a_put():
    env = Env(4)
    fs = compile_document(document(5), version=5, epoch="e1", updated_at=1005.0)
    change = Change(env=ENV, version=5, reset=True, upserted=frozenset(fs.flags))
    env.store.publish(ENV, fs, change)
    env.ring.record(change, fs)
    assert await env.initial(env.open(StreamKind.RULES), 3) == rules_put(fs)


async def test_a_store_that_moved_since_open_owes_a_snapshot_instead():
    env = Env(3)
    conn = env.open(StreamKind.RULES)
    env.store.publish(ENV, compile_document(document(4), version=4, epoch="e1"),
                      Change(env=ENV, version=4, upserted=frozenset({"f4"})))
    assert await env.initial(conn, None) == b"" and conn.needs_snapshot
    nowhere = env.open(StreamKind.RULES)
    nowhere.env = "unknown"  # an environment with no rules yet: nothing owed either
    assert await env.initial(nowhere, None) == b"" and not nowhere.needs_snapshot


# -- the evaluated stream ---------------------------------------------------------------------
def items(payload: bytes) -> dict[str, Any]:
    data = next(line[6:] for line in payload.decode().splitlines() if line.startswith("data: "))
    return {i["key"]: i.get("value") for i in orjson.loads(data)["flags"]}


async def test_evaluated_without_last_event_id_a_put_of_the_contexts_results():
    env = Env(4)
    conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    put = await env.initial(conn, None)
    assert put.startswith(b"event: put\nid: 4\n")
    assert items(put) == {"banner": True, "f2": True, "f3": True, "f4": True}
    assert set(conn.results) == {"banner", "f2", "f3", "f4"}


async def test_evaluated_current_version_gets_nothing_but_knows_what_the_client_holds():
    env = Env(4)
    conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    assert await env.initial(conn, 4) == b""
    assert set(conn.results) == {"banner", "f2", "f3", "f4"}


async def test_evaluated_gap_in_the_ring_is_one_patch_of_what_changed_for_the_context():
    env = Env(4)
    pro = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), 2)
    assert versions(pro) == ["4"] and items(pro) == {"banner": True, "f3": True, "f4": True}
    free = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "free"}), 2)
    # banner is still off for free, but its reason moved from STATIC to DEFAULT: patched too
    assert items(free) == {"banner": False, "f3": True, "f4": True}
    later = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "free"}), 3)
    assert items(later) == {"f4": True}  # only what changed after version 3


async def test_evaluated_a_change_that_changed_nothing_for_the_context_moves_the_id():
    env = Env(3)
    env.store.publish(ENV, compile_document(document(3), version=4, epoch="e1"),
                      Change(env=ENV, version=4, upserted=frozenset({"f3"})))
    env.ring.record(Change(env=ENV, version=4, upserted=frozenset({"f3"})), env.store.get(ENV))
    assert await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), 3) == id_only(4)


async def test_evaluated_ring_miss_rebuilds_from_history_while_pending():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    history = FakeHistory(env)
    conn = history.conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    got = await env.initial(conn, 10, history)
    assert history.asked == [("flag_set_at", ENV, 12, 10)]
    assert history.pending_seen == [True] and not conn.pending  # cleared afterwards
    assert versions(got) == ["12"] and items(got) == {"f11": True, "f12": True}


async def test_evaluated_ring_miss_without_history_gets_a_put():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    put = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), 2)
    assert put.startswith(b"event: put\nid: 12\n") and len(items(put)) == 12


@pytest.mark.parametrize("last_id", [99, None])
async def test_evaluated_unknown_or_newer_id_gets_a_put(last_id: int | None):
    env = Env(3)
    put = await env.initial(env.open(StreamKind.EVALUATED, {}), last_id)
    assert put.startswith(b"event: put\nid: 3\n")
