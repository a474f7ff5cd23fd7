"""A new stream's first events (proxy.streams.resume), given a real store, ring and snapshot
builders and a fake Redis history: no fan-out involved."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.model import Change, FlagSet, state_id
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


def revision(version: int) -> str:
    """The Redis change-log entry id of the write that made ``version`` (FlagSet.revision)."""
    return f"{1_700_000_000_000 + version}-0"


def compiled(version: int, doc_version: int | None = None) -> FlagSet:
    fs = compile_document(document(version if doc_version is None else doc_version),
                          version=version, epoch="e1", updated_at=1000.0 + version)
    return dataclasses.replace(fs, revision=revision(version))


class Env:
    """An environment at ``version``: each version 2.. upserted one flag ``fN`` (and version 3
    changed ``banner``), published to the store and recorded in the ring as the fan-out does."""

    def __init__(self, version: int, ring: ChangeLog | None = None) -> None:
        self.store = Store()
        self.ring = ring or ChangeLog()
        self.snapshots = Snapshots(self.store)
        self.sets: dict[int, FlagSet] = {}
        for v in range(1, version + 1):
            fs = compiled(v)
            touched = {f"f{v}"} | ({"banner"} if v == 3 else set())
            change = Change(env=ENV, version=v, reset=v == 1,
                            upserted=frozenset(fs.flags if v == 1 else touched))
            self.store.publish(ENV, fs, change)
            self.ring.record(change, fs)
            self.sets[v] = fs

    def sid(self, version: int) -> str:
        """The state id of ``version`` (what this server sent as ``id:``)."""
        return self.sets[version].state_id

    def open(self, kind: StreamKind, context: dict[str, Any] | None = None,
             max_queue: int = 64) -> Connection:
        conn = Connection(ENV, kind, "k", context, snapshot_for=self.snapshots.snapshot,
                          limits=Limits(max_queue=max_queue), stats=StreamStats())
        fs = self.store.get(ENV)
        if fs is not None:
            conn.hold(fs.version, fs.state_id)  # as FanOut.open does
        return conn

    async def initial(self, conn: Connection, last_id: str | None,
                      history: resume.History | None = None) -> bytes:
        return await resume.initial(conn, last_id, store=self.store, ring=self.ring,
                                    history=history, snapshots=self.snapshots)


class FakeHistory:
    """Redis's change log: answers from the flag sets it is given, recording each question.
    Like Redis, it knows only the states it passed through: any other id gets None."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.asked: list[tuple[Any, ...]] = []
        self.pending_seen: list[bool] = []
        self.conn: Connection | None = None

    def _version_of(self, held: str) -> int | None:
        return next((v for v, fs in self.env.sets.items() if fs.state_id == held), None)

    async def entries(self, env: str, held: str, current: int, epoch: str
                      ) -> list[Entry] | None:
        self.asked.append(("entries", env, held, current, epoch))
        version = self._version_of(held)
        if version is None or version >= current:
            return None
        return [Entry(version=v, at=2000.0 + v, upserted={f"f{v}": {"state": "ENABLED"}},
                      epoch=epoch, state_id=self.env.sid(v))
                for v in range(version + 1, current + 1)]



def ids(payload: bytes) -> list[str]:
    return [line[4:] for line in payload.decode().splitlines() if line.startswith("id: ")]


def other_write(version: int) -> str:
    """Version ``version`` of another write (a failover lost the one this server saw)."""
    return state_id(version, "e1", "1699999999999-7")


def other_epoch(version: int) -> str:
    """Version ``version`` of another epoch (Redis lost its data and was re-published)."""
    return state_id(version, "e0", revision(version))


# -- events and rules -------------------------------------------------------------------------
async def test_without_last_event_id_a_snapshot():
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), None) == id_only(env.sid(5))
    assert await env.initial(env.open(StreamKind.RULES), None) == rules_put(env.sets[5])


async def test_last_event_id_of_the_current_state_gets_nothing():
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), env.sid(5)) == b""
    assert await env.initial(env.open(StreamKind.RULES), env.sid(5)) == b""


async def test_a_gap_the_ring_holds_gets_exactly_those_versions():
    env = Env(6)
    events = await env.initial(env.open(StreamKind.EVENTS), env.sid(3))
    assert events == b"".join(notification(env.sid(v), 1000.0 + v) for v in (4, 5, 6))
    rules = await env.initial(env.open(StreamKind.RULES), env.sid(3))
    assert rules == b"".join(rules_entry(e) for e in env.ring.since(ENV, env.sid(3), 6) or [])
    assert ids(rules) == [env.sid(4), env.sid(5), env.sid(6)]
    assert [list(orjson.loads(line[6:])["flags"]) for line in rules.decode().splitlines()
            if line.startswith("data: ")] == [["f4"], ["f5"], ["f6"]]


async def test_a_ring_miss_without_history_gets_a_put():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))  # holds versions 9..12
    assert await env.initial(env.open(StreamKind.RULES), env.sid(3)) == rules_put(env.sets[12])
    assert await env.initial(env.open(StreamKind.EVENTS), env.sid(3)) == \
        notification(env.sid(12), 1012.0)


async def test_a_ring_miss_is_read_from_the_history_by_rules_streams_only():
    """The client key ships in browsers and picks its Last-Event-ID: its streams (events,
    evaluated) never make the proxy read Redis; past the ring, one notification."""
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    history = FakeHistory(env)
    got = await env.initial(env.open(StreamKind.EVENTS), env.sid(6), history)
    assert got == notification(env.sid(12), 1012.0)
    assert history.asked == []
    rules = await env.initial(env.open(StreamKind.RULES), env.sid(6), history)
    assert ids(rules) == [env.sid(v) for v in range(7, 13)]
    assert history.asked == [("entries", ENV, env.sid(6), 12, "e1")]
    history.asked.clear()
    await env.initial(env.open(StreamKind.RULES), env.sid(10), history)  # the ring has it
    assert history.asked == []


@pytest.mark.parametrize("last_id", ["99", "99-0a1b2c3d"])
async def test_a_last_event_id_newer_than_current_starts_over(last_id: str):
    """Another epoch's numbering (Redis lost its data and was re-published)."""
    env = Env(5)
    assert await env.initial(env.open(StreamKind.EVENTS), last_id) == \
        notification(env.sid(5), 1005.0)
    assert await env.initial(env.open(StreamKind.RULES), last_id) == rules_put(env.sets[5])


async def test_more_missed_versions_than_the_queue_holds_is_one_notification():
    env = Env(10)
    assert await env.initial(env.open(StreamKind.EVENTS, max_queue=3), env.sid(5)) == \
        notification(env.sid(10), 1010.0)
    near = await env.initial(env.open(StreamKind.EVENTS, max_queue=3), env.sid(7))
    assert ids(near) == [env.sid(8), env.sid(9), env.sid(10)]


async def test_a_reset_in_the_gap_gets_a_put():
    env = Env(4)
    fs = compiled(5)
    change = Change(env=ENV, version=5, reset=True, upserted=frozenset(fs.flags))
    env.store.publish(ENV, fs, change)
    env.ring.record(change, fs)
    assert await env.initial(env.open(StreamKind.RULES), env.sid(3)) == rules_put(fs)


async def test_a_store_that_moved_since_open_owes_a_snapshot_instead():
    env = Env(3)
    conn = env.open(StreamKind.RULES)
    env.store.publish(ENV, compiled(4), Change(env=ENV, version=4, upserted=frozenset({"f4"})))
    assert await env.initial(conn, None) == b"" and conn.needs_snapshot
    nowhere = env.open(StreamKind.RULES)
    nowhere.env = "unknown"  # an environment with no rules yet: nothing owed either
    assert await env.initial(nowhere, None) == b"" and not nowhere.needs_snapshot


# -- ids that are not a state this history passed through: a fresh snapshot, never silence ----
@pytest.mark.parametrize("held", [other_write, other_epoch], ids=["other-write", "other-epoch"])
@pytest.mark.parametrize("with_history", [False, True], ids=["ring", "ring+history"])
async def test_the_current_version_of_another_state_gets_a_snapshot(held, with_history: bool):
    """After a failover (another write) or a re-publish (another epoch), Redis's version 5
    is other content than the client's version 5: the number alone must not pass for it."""
    env = Env(5)
    history = FakeHistory(env) if with_history else None
    last_id = held(5)
    assert last_id != env.sid(5)
    assert await env.initial(env.open(StreamKind.RULES), last_id, history) == \
        rules_put(env.sets[5])
    assert await env.initial(env.open(StreamKind.EVENTS), last_id, history) == \
        notification(env.sid(5), 1005.0)
    conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    put = await env.initial(conn, last_id, history)
    assert put == env.snapshots.evaluated_put(env.open(StreamKind.EVALUATED, {"plan": "pro"}),
                                              env.sets[5])
    assert put.startswith(b"event: put\nid: " + env.sid(5).encode() + b"\n")
    assert set(conn.results) == {"banner", "f2", "f3", "f4", "f5"}


async def test_a_bare_version_from_an_older_server_gets_a_snapshot_not_silence():
    """A client of an older server resumes with "3": whatever its version 3 was, it is not
    a state id of ours. A snapshot replaces what it holds (one notification on events)."""
    env = Env(3)
    history = FakeHistory(env)
    assert await env.initial(env.open(StreamKind.EVENTS), "3", history) == \
        notification(env.sid(3), 1003.0)
    assert await env.initial(env.open(StreamKind.RULES), "3", history) == rules_put(env.sets[3])
    put = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), "3", history)
    assert put.startswith(b"event: put\nid: " + env.sid(3).encode() + b"\n")
    # an older version number, which the ring holds entries after, is no different
    assert await env.initial(env.open(StreamKind.RULES), "2", history) == rules_put(env.sets[3])


@pytest.mark.parametrize("last_id", ["garbage", "3-", "-3", "3-zzzz", "x" * 64])
async def test_an_id_that_is_no_state_gets_a_snapshot(last_id: str):
    env = Env(3)
    history = FakeHistory(env)
    assert await env.initial(env.open(StreamKind.EVENTS), last_id, history) == \
        notification(env.sid(3), 1003.0)
    assert await env.initial(env.open(StreamKind.RULES), last_id, history) == \
        rules_put(env.sets[3])


async def test_an_id_of_superscript_digits_gets_a_snapshot():
    env = Env(3)
    assert await env.initial(env.open(StreamKind.RULES), "\u00b2") == rules_put(env.sets[3])


@pytest.mark.parametrize("held", [other_write, other_epoch], ids=["other-write", "other-epoch"])
async def test_an_older_version_of_another_state_gets_a_put_though_the_ring_holds_after_it(held):
    """The ring holds versions 3..6, but its version 3 is not the client's: replaying 4..6 on
    top of what the client holds would mix two histories."""
    env = Env(6)
    history = FakeHistory(env)
    last_id = held(3)
    assert env.ring.since(ENV, env.sid(3), 6) is not None  # the genuine 3 would be replayed
    assert await env.initial(env.open(StreamKind.RULES), last_id, history) == \
        rules_put(env.sets[6])
    assert await env.initial(env.open(StreamKind.EVENTS), last_id, history) == \
        notification(env.sid(6), 1006.0)
    put = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), last_id, history)
    assert put.startswith(b"event: put\nid: " + env.sid(6).encode() + b"\n")
    assert history.asked == [("entries", ENV, last_id, 6, "e1")]  # rules only; Redis said no


# -- the evaluated stream ---------------------------------------------------------------------
def items(payload: bytes) -> dict[str, Any]:
    data = next(line[6:] for line in payload.decode().splitlines() if line.startswith("data: "))
    return {i["key"]: i.get("value") for i in orjson.loads(data)["flags"]}


async def test_evaluated_without_last_event_id_a_put_of_the_contexts_results():
    env = Env(4)
    conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    put = await env.initial(conn, None)
    assert put.startswith(b"event: put\nid: " + env.sid(4).encode() + b"\n")
    assert items(put) == {"banner": True, "f2": True, "f3": True, "f4": True}
    assert set(conn.results) == {"banner", "f2", "f3", "f4"}


async def test_evaluated_current_state_gets_nothing_but_knows_what_the_client_holds():
    env = Env(4)
    conn = env.open(StreamKind.EVALUATED, {"plan": "pro"})
    assert await env.initial(conn, env.sid(4)) == b""
    assert set(conn.results) == {"banner", "f2", "f3", "f4"}


async def test_evaluated_gap_in_the_ring_is_one_patch_of_what_changed_for_the_context():
    env = Env(4)
    pro = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), env.sid(2))
    assert ids(pro) == [env.sid(4)] and items(pro) == {"banner": True, "f3": True, "f4": True}
    free = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "free"}), env.sid(2))
    # banner is still off for free, but its reason moved from STATIC to DEFAULT: patched too
    assert items(free) == {"banner": False, "f3": True, "f4": True}
    later = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "free"}), env.sid(3))
    assert items(later) == {"f4": True}  # only what changed after version 3


async def test_evaluated_a_change_that_changed_nothing_for_the_context_moves_the_id():
    env = Env(3)
    fs = compiled(4, doc_version=3)
    env.store.publish(ENV, fs, Change(env=ENV, version=4, upserted=frozenset({"f3"})))
    env.ring.record(Change(env=ENV, version=4, upserted=frozenset({"f3"})), fs)
    assert await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), env.sid(3)) == \
        id_only(fs.state_id)


async def test_evaluated_ring_miss_gets_a_put_without_reading_the_history():
    """Rebuilding an old version from the log compiled the whole environment on the event
    loop per request, for any id a browser chose: past the ring's snapshots, a put."""
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    history = FakeHistory(env)
    got = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), env.sid(10),
                            history)
    assert history.asked == []
    assert got.startswith(b"event: put\nid: " + env.sid(12).encode() + b"\n")
    assert len(items(got)) == 12


async def test_evaluated_ring_miss_without_history_gets_a_put():
    env = Env(12, ring=ChangeLog(capacity=4, snapshots=2))
    put = await env.initial(env.open(StreamKind.EVALUATED, {"plan": "pro"}), env.sid(2))
    assert put.startswith(b"event: put\nid: " + env.sid(12).encode() + b"\n")
    assert len(items(put)) == 12


@pytest.mark.parametrize("last_id", ["99", "99-0a1b2c3d", None])
async def test_evaluated_unknown_or_newer_id_gets_a_put(last_id: str | None):
    env = Env(3)
    put = await env.initial(env.open(StreamKind.EVALUATED, {}), last_id)
    assert put.startswith(b"event: put\nid: " + env.sid(3).encode() + b"\n")
