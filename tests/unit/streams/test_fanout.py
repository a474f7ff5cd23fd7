"""Fan-out: per-connection bounded queues, coalescing, caps, revocation, resume."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import tracemalloc

import orjson
import pytest
import uvloop

from proxy.model import Change, Flag, FlagSet, FlagState, VariantType, state_id
from proxy.store import Store
from proxy.streams import fanout as fanout_module
from proxy.streams.connection import CapExceeded, Connection, StreamKind
from proxy.streams.fanout import FanOut, yield_to_requests
from proxy.streams.frames import PING
from proxy.streams.history import ChangeLog
from tests.waiting import until


def make_flag(key: str, on: bool = True) -> Flag:
    raw = {"state": "ENABLED", "variants": {"on": True, "off": False},
           "defaultVariant": "on" if on else "off"}
    return Flag(key=key, state=FlagState.ENABLED, variants={"on": True, "off": False},
                variant_type=VariantType.BOOLEAN, default_variant=raw["defaultVariant"],
                metadata={}, raw=raw)


class Env:
    """Publishes changes to a real Store the way a source does."""

    def __init__(self, store: Store, name: str = "prod"):
        self.store, self.name = store, name
        self.flags: dict[str, Flag] = {}
        self.version = 0
        # Versions written more than once (same_version): how many times. Only these are
        # kept, so that thousands of pushes hold nothing (a memory test counts the bytes).
        self.rewrites: dict[int, int] = {}

    def push(self, upsert: dict[str, bool] | None = None, delete: tuple[str, ...] = (),
             reset: bool = False, same_version: bool = False) -> FlagSet:
        """Publish the next version; ``same_version``: publish the current version number
        again as another write (a failover to a lagging replica, whose version N is other
        content)."""
        for k, on in (upsert or {}).items():
            self.flags[k] = make_flag(k, on)
        for k in delete:
            self.flags.pop(k, None)
        if same_version:
            self.rewrites[self.version] = self.rewrites.get(self.version, 0) + 1
        else:
            self.version += 1
        fs = FlagSet(flags=dict(self.flags), version=self.version, epoch="e1",
                     updated_at=1_700_000_000.0 + self.version,
                     revision=self.revision(self.version))
        change = Change(env=self.name, version=self.version, upserted=frozenset(upsert or {}),
                        deleted=frozenset(delete), reset=reset,
                        written_at=1_700_000_000.0 + self.version)
        self.store.publish(self.name, fs, change)
        return fs

    def revision(self, version: int) -> str:
        """The Redis change-log entry id of the newest write of ``version``."""
        return f"{1_700_000_000_000 + version}-{self.rewrites.get(version, 0)}"

    def sid(self, version: int) -> str:
        """The state id of ``version`` (its newest write)."""
        return state_id(version, "e1", self.revision(version))


def frames(payload: bytes) -> list[dict[str, str]]:
    out = []
    for block in payload.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            out.append(fields)
    return out


async def drain(conn: Connection, n: int, timeout: float = 2.0) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            item = await conn.next()
            assert item is not None
            got += frames(item[0])
    return got


@pytest.fixture
async def setup():
    store = Store()
    fanout = FanOut(store, ChangeLog(capacity=16, snapshots=4), max_queue=8,
                    max_queue_bytes=4096, max_per_key=3, max_total=5)
    fanout.start()
    env = Env(store)
    env.push({"a": True}, reset=True)
    yield store, fanout, env
    await fanout.stop()


async def test_events_stream_gets_one_notification_per_change(setup):
    _store, fanout, env = setup
    conn = fanout.open("prod", StreamKind.EVENTS, "k1")
    assert frames(await fanout.initial(conn, None)) == [{"id": env.sid(1)}]
    env.push({"b": True})
    env.push({"b": False})
    got = await drain(conn, 2)
    assert [f["id"] for f in got] == [env.sid(2), env.sid(3)]
    assert all(f["event"] == "message" for f in got)
    data = orjson.loads(got[1]["data"])
    assert data == {"type": "refetchEvaluation", "etag": env.sid(3),
                    "lastModified": 1_700_000_003}


async def test_rules_stream_put_then_patch_and_delete(setup):
    _store, fanout, env = setup
    conn = fanout.open("prod", StreamKind.RULES, "k1")
    put = frames(await fanout.initial(conn, None))
    assert put[0]["event"] == "put" and put[0]["id"] == env.sid(1)
    assert orjson.loads(put[0]["data"])["document"]["flags"]["a"]["defaultVariant"] == "on"
    env.push({"b": True})
    env.push(delete=("a",))
    env.push({"c": False}, delete=("b",))
    got = await drain(conn, 4)
    assert [(f["event"], f.get("id")) for f in got] == [
        ("patch", env.sid(2)), ("delete", env.sid(3)), ("delete", None), ("patch", env.sid(4))]
    assert list(orjson.loads(got[0]["data"])["flags"]) == ["b"]
    assert orjson.loads(got[1]["data"])["flags"] == ["a"]


async def test_stalled_reader_is_bounded_and_gets_newest_state_without_delaying_others(setup):
    store, fanout, env = setup
    stalled = fanout.open("prod", StreamKind.RULES, "k1")
    await fanout.initial(stalled, None)
    reader = fanout.open("prod", StreamKind.EVENTS, "k2")
    await fanout.initial(reader, None)
    received: list[str] = []

    async def read() -> None:
        while len(received) < 500:
            item = await reader.next()
            assert item is not None
            received.extend(f["id"] for f in frames(item[0]))

    task = asyncio.create_task(read())
    peak = 0
    for i in range(500):
        env.push({f"f{i % 50}": bool(i % 2)})
        await asyncio.sleep(0)  # let the fan-out task and the reader run
        peak = max(peak, stalled.queued_bytes)
        assert stalled.queued <= fanout.max_queue
    async with asyncio.timeout(5):
        await task
    assert received == [env.sid(v) for v in range(2, 502)]  # every version, in order, no gaps
    assert peak <= fanout.max_queue_bytes
    assert stalled.needs_snapshot
    # When the stalled reader finally reads: one put with the newest state, then live again.
    item = await stalled.next()
    assert item is not None
    put = frames(item[0])
    assert [(f["event"], f["id"]) for f in put] == [("put", env.sid(501))]
    assert len(orjson.loads(put[0]["data"])["document"]["flags"]) == 51
    env.push({"z": True})
    assert [f["id"] for f in await drain(stalled, 1)] == [env.sid(502)]
    assert store.get("prod").version == 502


async def test_never_drained_queue_memory_stays_bounded(setup):
    _store, fanout, env = setup
    conns = [fanout.open("prod", StreamKind.RULES, f"k{i}") for i in range(3)]
    for c in conns:
        await fanout.initial(c, None)
    tracemalloc.start()
    try:
        base = None
        for i in range(3000):
            env.push({f"flag{i % 20}": bool(i % 2)})
            if i % 100 == 99:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                current, _ = tracemalloc.get_traced_memory()
                if i == 999:
                    base = current
        await asyncio.sleep(0)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for c in conns:
        assert c.queued <= fanout.max_queue and c.queued_bytes <= fanout.max_queue_bytes
    assert base is not None
    # 2000 more changes after the first 1000 did not grow memory (ring and queues are full).
    assert current - base < 256 * 1024, (base, current)


async def test_caps_per_key_and_per_process(setup):
    _store, fanout, _env = setup
    conns = [fanout.open("prod", StreamKind.EVENTS, "k1") for _ in range(3)]
    with pytest.raises(CapExceeded) as exc:
        fanout.open("prod", StreamKind.EVENTS, "k1")
    assert exc.value.status == 429
    conns += [fanout.open("prod", StreamKind.EVENTS, "k2") for _ in range(2)]
    with pytest.raises(CapExceeded) as exc:
        fanout.open("prod", StreamKind.EVENTS, "k3")
    assert exc.value.status == 503
    fanout.release(conns[0])
    fanout.open("prod", StreamKind.EVENTS, "k1")  # room again
    assert fanout.total == 5
    assert fanout.stats.sse_connections["events"] == 5


async def test_cap_per_client_address_beside_the_key_cap():
    fanout = FanOut(Store(), max_per_key=10, max_total=10, max_per_address=2)
    attacker = [fanout.open("prod", StreamKind.EVENTS, "k1", address="192.0.2.1")
                for _ in range(2)]
    with pytest.raises(CapExceeded) as exc:
        fanout.open("prod", StreamKind.EVENTS, "k1", address="192.0.2.1")
    assert exc.value.status == 429 and "address" in exc.value.reason
    assert fanout.rejected == {"address": 1}
    fanout.open("prod", StreamKind.EVENTS, "k1", address="192.0.2.2")  # a real user: room
    fanout.open("prod", StreamKind.EVENTS, "k1")  # no address known: the key's cap only
    fanout.release(attacker[0])
    fanout.release(attacker[0])  # released twice (HEAD and finally): counted once
    fanout.open("prod", StreamKind.EVENTS, "k1", address="192.0.2.1")
    with pytest.raises(CapExceeded):
        fanout.open("prod", StreamKind.EVENTS, "k2", address="192.0.2.1")  # any key
    for conn in list(fanout.connections()):
        fanout.release(conn)
    assert fanout._by_address == {} and fanout._address_of == {}


async def test_close_key_ends_only_that_keys_streams(setup):
    _store, fanout, env = setup
    mine = fanout.open("prod", StreamKind.EVENTS, "revoked")
    other = fanout.open("prod", StreamKind.EVENTS, "kept")
    assert fanout.close_key("revoked") == 1
    async with asyncio.timeout(1):
        assert await mine.next() is None
    env.push({"b": True})
    assert [f["id"] for f in await drain(other, 1)] == [env.sid(2)]


async def test_close_wakes_a_waiting_reader(setup):
    _store, fanout, _env = setup
    conn = fanout.open("prod", StreamKind.EVENTS, "k1")
    waiter = asyncio.create_task(conn.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    await fanout.stop()
    async with asyncio.timeout(1):
        assert await waiter is None


async def test_connection_opened_before_fanout_ran_gets_no_duplicate(setup):
    _store, fanout, env = setup
    env.push({"b": True})  # store is at 2; the fan-out task has not run yet
    conn = fanout.open("prod", StreamKind.RULES, "k1")
    put = frames(await fanout.initial(conn, None))
    assert put[0]["id"] == env.sid(2)
    env.push({"c": True})
    got = await drain(conn, 1)
    assert [f["id"] for f in got] == [env.sid(3)]  # version 2 was not sent again
    assert conn.queued == 0


async def test_resume_rules_from_ring_sends_exactly_the_missed_versions(setup):
    _store, fanout, env = setup
    for i in range(5):
        env.push({f"x{i}": True})  # versions 2..6
    await asyncio.sleep(0)
    conn = fanout.open("prod", StreamKind.RULES, "k1")
    got = frames(await fanout.initial(conn, env.sid(3)))
    assert [(f["event"], f["id"]) for f in got] == [
        ("patch", env.sid(4)), ("patch", env.sid(5)), ("patch", env.sid(6))]
    assert [list(orjson.loads(f["data"])["flags"]) for f in got] == [["x2"], ["x3"], ["x4"]]
    # Up to date: nothing. In the future (another epoch) or too old for the ring: a put.
    c2 = fanout.open("prod", StreamKind.RULES, "k2")
    assert await fanout.initial(c2, env.sid(6)) == b""
    c3 = fanout.open("prod", StreamKind.EVENTS, "k3")
    assert [f["id"] for f in frames(await fanout.initial(c3, env.sid(4)))] == \
        [env.sid(5), env.sid(6)]


async def test_resume_too_old_for_ring_gets_a_put(setup):
    _store, fanout, env = setup
    for i in range(40):  # ring holds 16
        env.push({f"x{i % 5}": bool(i % 2)})
    conn = fanout.open("prod", StreamKind.RULES, "k1")
    got = frames(await fanout.initial(conn, env.sid(2)))
    assert [(f["event"], f["id"]) for f in got] == [("put", env.sid(41))]
    events = fanout.open("prod", StreamKind.EVENTS, "k2")
    got = frames(await fanout.initial(events, env.sid(2)))
    assert [(f["event"], f["id"]) for f in got] == [("message", env.sid(41))]  # one for all
    future = fanout.open("prod", StreamKind.RULES, "k3")
    assert frames(await fanout.initial(future, "99"))[0]["event"] == "put"


async def test_reset_change_sends_a_put_on_the_rules_stream(setup):
    _store, fanout, env = setup
    conn = fanout.open("prod", StreamKind.RULES, "k1")
    await fanout.initial(conn, None)
    env.push({"q": True}, reset=True)
    got = await drain(conn, 1)
    assert (got[0]["event"], got[0]["id"]) == ("put", env.sid(2))
    # and resuming across a reset is a put too
    c2 = fanout.open("prod", StreamKind.RULES, "k2")
    assert frames(await fanout.initial(c2, env.sid(1)))[0]["event"] == "put"


async def test_a_reset_to_the_same_version_reaches_events_and_rules_streams(setup):
    """After a failover to a lagging replica, Redis's version 2 is another write than the one
    the streams sent: the source publishes it as a reset of the same number, and every
    connection at version 2 gets it (a notification, a put) under the new state id."""
    _store, fanout, env = setup
    env.push({"b": True})  # version 2, as first written
    events = fanout.open("prod", StreamKind.EVENTS, "k1")
    rules = fanout.open("prod", StreamKind.RULES, "k2")
    assert frames(await fanout.initial(events, None)) == [{"id": env.sid(2)}]
    await fanout.initial(rules, None)
    assert events.version == rules.version == 2
    seen = env.sid(2)
    fs = env.push({"b": False, "c": True}, reset=True, same_version=True)
    assert fs.version == 2 and fs.state_id == env.sid(2) != seen
    got = await drain(events, 1)
    assert [(f["event"], f["id"]) for f in got] == [("message", fs.state_id)]
    assert orjson.loads(got[0]["data"])["etag"] == fs.state_id
    got = await drain(rules, 1)
    assert [(f["event"], f["id"]) for f in got] == [("put", fs.state_id)]
    doc = orjson.loads(got[0]["data"])
    assert doc["version"] == 2
    assert {k: v["defaultVariant"] for k, v in doc["document"]["flags"].items()} == \
        {"a": "on", "b": "off", "c": "on"}
    assert events.queued == rules.queued == 0


async def test_a_change_of_the_same_version_that_is_no_reset_is_not_sent_again(setup):
    """Only a reset says "this number is other content now": a plain change of a version a
    connection holds is one it has seen."""
    _store, fanout, env = setup
    env.push({"b": True})  # version 2
    events = fanout.open("prod", StreamKind.EVENTS, "k1")
    rules = fanout.open("prod", StreamKind.RULES, "k2")
    await fanout.initial(events, None)
    await fanout.initial(rules, None)
    env.push({"d": True}, same_version=True)  # version 2 again, not a reset
    env.push({"e": True})  # version 3: the next thing either stream gets
    got = await drain(events, 1)
    assert [(f["event"], f["id"]) for f in got] == [("message", env.sid(3))]
    got = await drain(rules, 1)
    assert [(f["event"], f["id"]) for f in got] == [("patch", env.sid(3))]
    assert list(orjson.loads(got[0]["data"])["flags"]) == ["e"]
    assert events.queued == rules.queued == 0


@pytest.mark.parametrize("same_version", [False, True], ids=["next-version", "same-version"])
async def test_a_connection_opened_after_a_reset_was_published_gets_it_once(setup,
                                                                         same_version: bool):
    """The store holds the reset already, the fan-out has not delivered it yet: the new
    connection's first events carry that state, and the fan-out does not send it again."""
    _store, fanout, env = setup
    fs = env.push({"b": True}, reset=True, same_version=same_version)
    events = fanout.open("prod", StreamKind.EVENTS, "k1")  # before the fan-out task runs
    rules = fanout.open("prod", StreamKind.RULES, "k2")
    assert frames(await fanout.initial(events, None)) == [{"id": fs.state_id}]
    assert [(f["event"], f["id"]) for f in frames(await fanout.initial(rules, None))] == \
        [("put", fs.state_id)]
    nxt = env.push({"c": True})
    assert [(f["event"], f["id"]) for f in await drain(events, 1)] == \
        [("message", nxt.state_id)]
    assert [(f["event"], f["id"]) for f in await drain(rules, 1)] == [("patch", nxt.state_id)]
    assert events.queued == rules.queued == 0


async def test_heartbeat_only_on_idle_connections(setup):
    _store, fanout, env = setup
    idle = fanout.open("prod", StreamKind.EVENTS, "k1")
    busy = fanout.open("prod", StreamKind.EVENTS, "k2")
    env.push({"b": True})
    await asyncio.sleep(0)  # the fan-out task queues version 2 on both
    assert busy.queued == 1
    assert (await idle.next())[0].startswith(b"event: message")
    await fanout.heartbeat()
    assert await idle.next() == (b"", None)  # empty payload: the stream sends a comment
    assert busy.queued == 1  # had something queued: no heartbeat added


# -- the evaluated stream, with the real compiler and engine ---------------------------------
def _compiled(version: int, banner_targeting: dict, color: str = "red") -> FlagSet:
    from proxy.evaluation.documents import compile_document

    doc = {"flags": {
        "banner": {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "off", "targeting": banner_targeting},
        "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"},
                  "defaultVariant": color},
    }}
    fs = compile_document(doc, version=version, epoch="e", updated_at=1000.0 + version)
    return dataclasses.replace(fs, revision=f"{1_700_000_000_000 + version}-0")


def sid(version: int) -> str:
    """The state id of :func:`_compiled`'s ``version``."""
    return _compiled(version, {}).state_id


PRO_ONLY = {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", None]}
PRO_OR_FREE = {"if": [{"in": [{"var": "plan"}, ["pro", "free"]]}, "on", None]}


async def test_evaluated_patch_goes_only_to_contexts_whose_result_changed():
    store = Store()
    fanout = FanOut(store, ChangeLog())
    fanout.start()
    try:
        store.publish("prod", _compiled(1, PRO_ONLY), Change(env="prod", version=1, reset=True))
        conns = {plan: fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": plan})
                 for plan in ("pro", "free", "team")}
        for plan, conn in conns.items():
            put = frames(await fanout.initial(conn, None))
            assert put[0]["event"] == "put"
            items = {i["key"]: i for i in orjson.loads(put[0]["data"])["flags"]}
            assert items["banner"]["value"] is (plan == "pro")
        store.publish("prod", _compiled(2, PRO_OR_FREE),
                      Change(env="prod", version=2, upserted=frozenset({"banner"})))
        store.publish("prod", _compiled(3, PRO_OR_FREE, color="blue"),
                      Change(env="prod", version=3, upserted=frozenset({"color"})))
        free = await drain(conns["free"], 2)
        assert [(f["event"], f["id"]) for f in free] == [("patch", sid(2)), ("patch", sid(3))]
        assert [i["key"] for i in orjson.loads(free[0]["data"])["flags"]] == ["banner"]
        pro = await drain(conns["pro"], 1)  # version 2 did not change anything for pro
        assert [(f["event"], f["id"]) for f in pro] == [("patch", sid(3))]
        assert conns["pro"].queued == 0 and conns["team"].queued == 1
        # resume from version 1 (snapshot kept): one patch with everything that changed since
        late = fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": "free"})
        got = frames(await fanout.initial(late, sid(1)))
        assert [(f["event"], f["id"]) for f in got] == [("patch", sid(3))]
        assert sorted(i["key"] for i in orjson.loads(got[0]["data"])["flags"]) == \
            ["banner", "color"]
        same = fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": "pro"})
        got = frames(await fanout.initial(same, sid(2)))
        assert [(f["event"], f["id"]) for f in got] == [("patch", sid(3))]
        assert [i["key"] for i in orjson.loads(got[0]["data"])["flags"]] == ["color"]
        # a change that affects nobody's result: nothing queued, an id-only frame on resume
        store.publish("prod", _compiled(4, PRO_OR_FREE, color="blue"),
                      Change(env="prod", version=4, upserted=frozenset({"color"})))
        await asyncio.sleep(0)
        assert conns["free"].queued == 0
        quiet = fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": "team"})
        assert frames(await fanout.initial(quiet, sid(3))) == [{"id": sid(4)}]
    finally:
        await fanout.stop()


async def test_events_resume_past_the_queue_bound_is_one_notification(setup):
    _store, fanout, env = setup
    for i in range(12):  # versions 2..13; the ring (16) still has them, max_queue is 8
        env.push({f"x{i}": True})
    conn = fanout.open("prod", StreamKind.EVENTS, "k1")
    got = frames(await fanout.initial(conn, env.sid(1)))
    assert [(f["event"], f["id"]) for f in got] == [("message", env.sid(13))]
    near = fanout.open("prod", StreamKind.EVENTS, "k2")
    assert [f["id"] for f in frames(await fanout.initial(near, env.sid(6)))] == \
        [env.sid(v) for v in range(7, 14)]


async def test_evaluated_stream_opened_before_any_rules_gets_a_put_first():
    store = Store()
    fanout = FanOut(store, ChangeLog())
    fanout.start()
    try:
        conn = fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": "pro"})
        assert await fanout.initial(conn, None) == b""
        store.publish("prod", _compiled(1, PRO_ONLY), Change(env="prod", version=1, reset=True))
        got = await drain(conn, 1)
        assert [(f["event"], f["id"]) for f in got] == [("put", sid(1))]
        assert len(orjson.loads(got[0]["data"])["flags"]) == 2
    finally:
        await fanout.stop()


async def test_evaluated_reset_to_the_same_version_is_diffed_and_a_plain_change_is_not():
    """A reset of the version an evaluated stream holds (another write after a failover):
    each context gets a patch of what differs for it, under the new state id; a context whose
    results are the same gets nothing. A non-reset change of that version is not sent."""
    store = Store()
    fanout = FanOut(store, ChangeLog())
    fanout.start()
    try:
        store.publish("prod", _compiled(1, PRO_ONLY), Change(env="prod", version=1, reset=True))
        conns = {plan: fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": plan})
                 for plan in ("pro", "free")}
        for conn in conns.values():
            assert frames(await fanout.initial(conn, None))[0]["id"] == sid(1)
        other = dataclasses.replace(_compiled(1, PRO_OR_FREE), revision="1700000009999-0")
        assert other.version == 1 and other.state_id != sid(1)
        store.publish("prod", other, Change(env="prod", version=1, reset=True))
        free = await drain(conns["free"], 1)
        assert [(f["event"], f["id"]) for f in free] == [("patch", other.state_id)]
        assert [(i["key"], i["value"]) for i in orjson.loads(free[0]["data"])["flags"]] == \
            [("banner", True)]
        # the same version once more, not as a reset: nobody gets it
        plain = dataclasses.replace(_compiled(1, PRO_OR_FREE, color="blue"),
                                    revision="1700000009998-0")
        store.publish("prod", plain, Change(env="prod", version=1, upserted=frozenset({"color"})))
        store.publish("prod", _compiled(2, PRO_OR_FREE, color="blue"),
                      Change(env="prod", version=2, upserted=frozenset({"color"})))
        for plan, conn in conns.items():  # the first thing after the reset is version 2
            got = await drain(conn, 1)
            assert [(f["event"], f["id"]) for f in got] == [("patch", sid(2))], plan
            assert [i["key"] for i in orjson.loads(got[0]["data"])["flags"]] == ["color"]
            assert conn.queued == 0
    finally:
        await fanout.stop()


# -- throttle: leading + trailing edge per environment ---------------------------------------
@pytest.fixture
async def throttled():
    """A fan-out merging changes within 1.5 s; version 1 is in the store before it starts,
    so the environment is quiet (no round yet) when a test begins."""
    store = Store()
    fanout = FanOut(store, ChangeLog(), coalesce_s=1.5)
    env = Env(store)
    env.push({"a": True, "b": True}, reset=True)
    fanout.start()
    yield store, fanout, env
    await fanout.stop()


async def test_throttle_never_delays_the_first_change_and_merges_a_burst(throttled):
    _store, fanout, env = throttled
    rules = fanout.open("prod", StreamKind.RULES, "k1")
    events = fanout.open("prod", StreamKind.EVENTS, "k2")
    await fanout.initial(rules, None)
    await fanout.initial(events, None)
    env.push({"a": False})  # after a quiet spell: out at once, far within the window
    assert [(f["event"], f["id"]) for f in await drain(rules, 1, timeout=0.75)] == [
        ("patch", env.sid(2))]
    assert [f["id"] for f in await drain(events, 1, timeout=0.75)] == [env.sid(2)]
    env.push({"c": True})  # a burst inside the window ...
    env.push(delete=("b",))
    env.push({"c": False, "d": True})
    env.push({"e": True})
    env.push(delete=("e",))
    got = await drain(rules, 2, timeout=5)  # ... is one round at the newest version
    assert [(f["event"], f.get("id")) for f in got] == [("delete", None), ("patch", env.sid(7))]
    assert orjson.loads(got[0]["data"]) == {"version": 7, "flags": ["b", "e"]}
    patch = orjson.loads(got[1]["data"])
    assert patch["version"] == 7
    assert {k: v["defaultVariant"] for k, v in patch["flags"].items()} == {"c": "off", "d": "on"}
    assert [f["id"] for f in await drain(events, 1, timeout=5)] == [env.sid(7)]
    assert rules.queued == 0 and events.queued == 0  # nothing else was sent
    assert fanout.stats.sse_events[("fanout", "merged")] == 4
    # The change log still holds every version: a resume replays exactly the missed ones.
    assert [e.version for e in fanout.changelog.since("prod", env.sid(2), 7) or []] == \
        [3, 4, 5, 6, 7]
    late = fanout.open("prod", StreamKind.RULES, "k3")
    replay = frames(await fanout.initial(late, env.sid(4)))
    assert [f.get("id") for f in replay] == [env.sid(5), env.sid(6), env.sid(7)]


async def test_throttle_mid_window_rules_connection_gets_only_later_versions(throttled):
    _store, fanout, env = throttled
    early = fanout.open("prod", StreamKind.RULES, "k1")
    await fanout.initial(early, None)
    env.push({"a": False})  # leading edge: the window starts
    await drain(early, 1, timeout=0.75)
    env.push({"b": False})  # version 3, held until the window ends
    mid = fanout.open("prod", StreamKind.RULES, "k2")  # opened at version 3
    assert mid.version == 3
    await fanout.initial(mid, None)
    env.push({"c": True})  # version 4
    early_got = await drain(early, 1, timeout=5)
    mid_got = await drain(mid, 1, timeout=5)
    assert [f["id"] for f in early_got] == [env.sid(4)]
    assert [f["id"] for f in mid_got] == [env.sid(4)]
    assert set(orjson.loads(early_got[0]["data"])["flags"]) == {"b", "c"}
    assert set(orjson.loads(mid_got[0]["data"])["flags"]) == {"c"}  # not b: it has it


async def test_throttle_merges_evaluated_patches_per_context():
    store = Store()
    fanout = FanOut(store, ChangeLog(), coalesce_s=1.5)
    store.publish("prod", _compiled(1, PRO_ONLY), Change(env="prod", version=1, reset=True))
    fanout.start()
    try:
        conns = {plan: fanout.open("prod", StreamKind.EVALUATED, "k", {"plan": plan})
                 for plan in ("pro", "free")}
        for conn in conns.values():
            await fanout.initial(conn, None)
        store.publish("prod", _compiled(2, PRO_ONLY, color="blue"),
                      Change(env="prod", version=2, upserted=frozenset({"color"})))
        for conn in conns.values():
            assert [f["id"] for f in await drain(conn, 1, timeout=0.75)] == [sid(2)]
        store.publish("prod", _compiled(3, PRO_OR_FREE, color="blue"),
                      Change(env="prod", version=3, upserted=frozenset({"banner"})))
        store.publish("prod", _compiled(4, PRO_OR_FREE, color="red"),
                      Change(env="prod", version=4, upserted=frozenset({"color"})))
        got = {plan: await drain(conn, 1, timeout=5) for plan, conn in conns.items()}
        keys = {plan: [i["key"] for i in orjson.loads(fr[0]["data"])["flags"]]
                for plan, fr in got.items()}
        assert keys == {"pro": ["color"], "free": ["banner", "color"]}  # only what changed
        assert {fr[0]["id"] for fr in got.values()} == {sid(4)}
        assert all(c.queued == 0 for c in conns.values())
    finally:
        await fanout.stop()


def test_merge_changes_keeps_the_final_state_of_each_touched_key():
    from proxy.streams.fanout import merge_changes

    fs = FlagSet(flags={"a": make_flag("a"), "c": make_flag("c")}, version=4, epoch="e1")
    merged = merge_changes([
        Change(env="prod", version=2, upserted=frozenset({"a", "b"})),
        Change(env="prod", version=3, deleted=frozenset({"a", "b"}), evaluators_changed=True),
        Change(env="prod", version=4, upserted=frozenset({"a", "c"})),
    ], fs)
    assert merged.version == 4
    assert merged.upserted == {"a", "c"} and merged.deleted == {"b"}
    assert merged.evaluators_changed and not merged.metadata_changed


async def test_take_sends_what_queued_up_as_one_payload(setup):
    _store, fanout, env = setup
    conn = fanout.open("prod", StreamKind.EVENTS, "k1")
    await fanout.initial(conn, None)
    for _ in range(3):
        env.push({"b": True})
    async with asyncio.timeout(2):
        while conn.queued < 3:  # the fan-out task queues each (no throttle here)
            await asyncio.sleep(0)
    conn.heartbeat()  # not idle: no heartbeat behind the events
    batch = conn.take()
    assert batch is not None
    assert [f["id"] for f in frames(batch[0])] == [env.sid(2), env.sid(3), env.sid(4)]
    assert batch[1] == [1_700_000_002.0, 1_700_000_003.0, 1_700_000_004.0]
    assert conn.queued == 0 and conn.queued_bytes == 0
    assert conn.take() is None and not conn.closed  # nothing ready: the stream waits
    waiter = conn.wait()
    conn.heartbeat()
    assert waiter.done()  # woken
    assert conn.take() == (b"", [])  # idle: a heartbeat
    conn.close("test")
    assert conn.take() is None and conn.closed


async def with_direct_writer(fanout: FanOut) -> tuple[Connection, list[bytes], list[bool]]:
    """An events stream whose socket writer is a list (``wire``); ``accept[0] = False``
    makes it decline, as a full socket does."""
    conn = fanout.open("prod", StreamKind.EVENTS, "k1")
    await fanout.initial(conn, None)
    wire: list[bytes] = []
    accept = [True]

    def write(body: bytes) -> bool:
        if accept[0]:
            wire.append(body)
        return accept[0]

    conn.direct = write
    return conn, wire, accept


async def test_a_parked_stream_gets_events_written_directly_in_order(setup):
    """While the stream waits with nothing queued, the fan-out writes each event straight to
    its socket (Connection.direct): no wake-up. When the writer declines (socket full), events
    queue and the stream is woken; while the stream holds a batch, nothing jumps ahead of it."""
    _store, fanout, env = setup
    conn, wire, accept = await with_direct_writer(fanout)
    sent = fanout.stats.sse_events.get(("events", "sent"), 0)
    assert conn.take() is None
    waiter = conn.wait()  # parked
    env.push({"b": True})
    await until(lambda: wire)
    assert [f["id"] for f in frames(wire[0])] == [env.sid(2)]
    assert not waiter.done() and conn.queued == 0  # written, the stream never woke
    assert conn.wait() is waiter  # and it keeps waiting on the same future
    assert fanout.stats.sse_events[("events", "sent")] == sent + 1  # counted as sent
    assert fanout.propagation.counts.get("events")  # and its propagation observed

    accept[0] = False  # the socket is full: the writer declines
    env.push({"b": False})
    await until(lambda: conn.queued == 1)
    assert waiter.done() and len(wire) == 1  # queued, the stream woken to send it

    accept[0] = True  # drained meanwhile, but the stream holds a batch it has not sent yet
    batch = conn.take()
    assert batch is not None and [f["id"] for f in frames(batch[0])] == [env.sid(3)]
    env.push({"c": True})
    await until(lambda: conn.queued == 1)
    assert len(wire) == 1  # version 4 waits behind version 3: not written ahead of it


# -- sharing the loop with requests ----------------------------------------------------------
@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop],
                         ids=["asyncio", "uvloop"])
def test_a_request_ready_during_a_slice_runs_before_the_next_slice(new_loop):
    """A request whose bytes arrive while the fan-out holds the loop is handled before the
    fan-out's next slice. (``sleep(0)`` puts that slice first: the fan-out's task is queued
    before the loop polls the socket the request comes on.) On both loops: serve uses uvloop,
    whose order of timers, ready callbacks and I/O differs from asyncio's."""
    order: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    server, client = socket.socketpair()
    server.setblocking(False)

    async def handle() -> None:  # the request's task, as the HTTP server starts it
        order.append("request")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            server.recv(64)
            tasks.append(loop.create_task(handle()))

        loop.add_reader(server.fileno(), readable)
        try:
            order.append("slice 1")
            client.send(b"GET / HTTP/1.1\r\n\r\n")  # arrives while this slice runs
            await yield_to_requests()
            order.append("slice 2")
            await until(lambda: "request" in order)
        finally:
            loop.remove_reader(server.fileno())

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(scenario())
    finally:
        server.close()
        client.close()
    assert order == ["slice 1", "request", "slice 2"]


def slice_clock(monkeypatch) -> None:
    """A fan-out clock that advances 0.6 of a slice per reading: it yields every two
    connections, however cheap or dear each one really is."""
    now = [0.0]

    def clock() -> float:
        now[0] += fanout_module.SLICE_S * 0.6
        return now[0]

    monkeypatch.setattr(fanout_module, "_clock", clock)


async def progress_seen_by_another_task(conns: list[Connection], done) -> list[int]:
    """How many connections had something queued, each time another task got the loop."""
    seen: list[int] = []
    while not seen or seen[-1] < len(conns):
        seen.append(sum(1 for c in conns if done(c)))
        await asyncio.sleep(0)
    return [b - a for a, b in itertools.pairwise(seen) if b != a]


@pytest.mark.parametrize("cause", ["change", "heartbeat"])
async def test_push_slices_are_bounded_in_time(monkeypatch, setup, cause):
    """Events and rules streams, for a change and for heartbeats: the fan-out yields once
    SLICE_S of work is done."""
    _store, fanout, env = setup
    fanout.max_per_key = fanout.max_total = 100
    conns = [fanout.open("prod", StreamKind.EVENTS, f"k{i}") for i in range(40)]
    for conn in conns:
        await fanout.initial(conn, None)
    slice_clock(monkeypatch)
    task = asyncio.create_task(progress_seen_by_another_task(conns, lambda c: c.queued))
    if cause == "change":
        env.push({"b": True})
    else:
        beat = asyncio.create_task(fanout.heartbeat())  # as the streams' watcher runs it
    async with asyncio.timeout(5):
        steps = await task
        if cause == "heartbeat":
            await beat
    assert sum(steps) == len(conns) and max(steps) <= 2


async def test_evaluated_slices_are_bounded_in_time(monkeypatch):
    """Evaluated streams: the same bound, evaluation included."""
    store = Store()
    fanout = FanOut(store, ChangeLog())
    fanout.start()
    try:
        store.publish("prod", _compiled(1, PRO_ONLY), Change(env="prod", version=1, reset=True))
        conns = [fanout.open("prod", StreamKind.EVALUATED, "k", {"targetingKey": f"u{i}"})
                 for i in range(40)]
        for conn in conns:
            await fanout.initial(conn, None)
        slice_clock(monkeypatch)
        task = asyncio.create_task(progress_seen_by_another_task(conns, lambda c: c.queued))
        store.publish("prod", _compiled(2, PRO_ONLY, color="blue"),
                      Change(env="prod", version=2, upserted=frozenset({"color"})))
        async with asyncio.timeout(5):
            steps = await task
        assert sum(steps) == len(conns) and max(steps) <= 2
    finally:
        await fanout.stop()


async def test_a_parked_stream_gets_its_heartbeat_written_directly(setup):
    """Like an event: no wake-up while the stream waits and the socket takes it; queued (and
    the stream woken) when the writer declines."""
    _store, fanout, _env = setup
    conn, wire, accept = await with_direct_writer(fanout)
    waiter = conn.wait()  # parked
    await fanout.heartbeat()
    assert wire == [PING] and not waiter.done() and conn.queued == 0
    accept[0] = False  # the socket is full
    await fanout.heartbeat()
    assert waiter.done() and conn.take() == (b"", [])  # queued: the stream sends it


@pytest.mark.parametrize("kind", [StreamKind.EVENTS, StreamKind.RULES, StreamKind.EVALUATED])
async def test_direct_writes_are_counted_once_each_across_slices(monkeypatch, setup, kind):
    """The fan-out counts what it wrote straight to sockets once per slice, not per
    connection: every event still counts once as sent and once in the propagation histogram,
    including those of a slice cut short by a yield (two connections per slice here)."""
    _store, fanout, env = setup
    fanout.max_per_key = fanout.max_total = 100
    conns = []
    for i in range(21):  # an odd number: the last slice is not full
        conn = fanout.open("prod", kind, f"k{i}", {"targetingKey": f"u{i}"}
                           if kind is StreamKind.EVALUATED else None)
        await fanout.initial(conn, None)
        conn.direct = lambda body: True
        conn.wait()  # parked: pushes go straight to the writer
        conns.append(conn)
    slice_clock(monkeypatch)
    sent = fanout.stats.sse_events.get((kind.value, "sent"), 0)
    env.push({"b": True})
    await until(lambda: all(c.version == 2 for c in conns))
    await until(lambda: fanout.stats.sse_events.get((kind.value, "sent"), 0) == sent + 21)
    counts = fanout.propagation.counts[kind.value]
    assert sum(counts) == 21 and all(c.queued == 0 for c in conns)


async def test_evaluated_streams_count_what_they_deliver_as_exposures(setup):
    """Insights (DESIGN §11): a put counts every flag's result, a patch only those it carries."""
    _store, fanout, env = setup
    conn = fanout.open("prod", StreamKind.EVALUATED, "k", {"targetingKey": "u1"})
    await fanout.initial(conn, None)
    assert fanout.stats.exposures == {("prod", "a", "on", "STATIC"): 1}
    env.push({"b": False})
    await drain(conn, 1)
    env.push({"b": False, "a": True})  # nothing this user sees changes: no patch, no count
    env.push({"a": False})
    await drain(conn, 1)
    assert fanout.stats.exposures == {("prod", "a", "on", "STATIC"): 1,
                                      ("prod", "b", "off", "STATIC"): 1,
                                      ("prod", "a", "off", "STATIC"): 1}
