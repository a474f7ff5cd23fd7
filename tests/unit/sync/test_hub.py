"""Each environment's sync document: rendered once per content change and shared, changes
within the coalescing window merged, byte-equal renders dropped, oversized documents
refused with the last good one kept, streams waking for their environment only."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from proxy.evaluation.documents import compile_document
from proxy.model import Change, FlagSet
from proxy.store import Store
from proxy.sync.caller import Caller
from proxy.sync.document import ShapeMemo, render
from proxy.sync.hub import DocumentHub
from proxy.sync.metrics import SyncStats
from tests.waiting import until


def doc(value: str, **extra: object) -> dict:
    return {"flags": {"f": {"state": "ENABLED", "variants": {"v": value},
                            "defaultVariant": "v"}}, **extra}


def publish(store: Store, env: str, document: dict, version: int) -> None:
    store.publish(env, compile_document(document, version=version),
                  Change(env=env, version=version, reset=True))


def hub_of(store: Store, coalesce_s: float = 0.05, **kw: object) -> tuple[DocumentHub, SyncStats]:
    stats = SyncStats()
    hub = DocumentHub(store, stats, coalesce_s=coalesce_s, **kw)  # type: ignore[arg-type]
    hub.start()
    return hub, stats


async def test_first_document_at_once_and_shared() -> None:
    store = Store()
    publish(store, "prod", doc("a"), 1)
    hub, _ = hub_of(store)
    first = hub.current("prod")
    assert first is not None and '"a"' in first.text
    assert hub.current("prod") is first  # rendered once, the same response for every stream
    assert hub.current("nowhere") is None


async def test_changes_within_the_window_coalesce_into_one_wake() -> None:
    store = Store()
    publish(store, "prod", doc("a"), 1)
    hub, stats = hub_of(store)
    rendered: list[int] = []

    def counting(flag_set: FlagSet, env: str, memo: ShapeMemo) -> str:
        rendered.append(flag_set.version)
        return render(flag_set, env, memo)

    hub.renderer = counting
    hub.current("prod")
    watch = hub.watch(Caller("prod", "server", "k"))
    other = hub.watch(Caller("dev", "server", "k"))
    for version, value in ((2, "b"), (3, "c"), (4, "d")):
        publish(store, "prod", doc(value), version)
    assert not watch.wake.is_set()  # nothing before the window closes
    await until(watch.wake.is_set, timeout=2, what="the coalesced wake")
    assert rendered == [1, 4]  # one render for three changes
    assert '"d"' in hub.current("prod").text  # type: ignore[union-attr]
    assert not other.wake.is_set()
    assert stats.rendered == {"prod": 4}


async def test_a_lone_change_goes_at_once_and_one_right_after_waits_for_the_window() -> None:
    store = Store()
    publish(store, "prod", doc("a"), 1)
    hub, stats = hub_of(store, coalesce_s=0.3)
    hub.current("prod")
    watch = hub.watch(Caller("prod", "server", "k"))
    started = asyncio.get_running_loop().time()
    publish(store, "prod", doc("b"), 2)
    await until(watch.wake.is_set, timeout=2, what="the leading-edge render")
    assert asyncio.get_running_loop().time() - started < 0.2  # not after the window
    watch.wake.clear()
    publish(store, "prod", doc("c"), 3)
    await until(lambda: stats.rendered.get("prod") == 3, timeout=2, what="the trailing render")
    assert asyncio.get_running_loop().time() - started >= 0.3  # held until the window ended
    assert watch.wake.is_set()


async def test_byte_equal_render_wakes_nobody() -> None:
    store = Store()
    publish(store, "prod", doc("a"), 1)
    hub, stats = hub_of(store, coalesce_s=0)
    before = hub.current("prod")
    watch = hub.watch(Caller("prod", "server", "k"))
    publish(store, "prod", doc("a", **{"$evaluators": {"unused": {"==": [1, 1]}}}), 2)
    await until(lambda: stats.rendered.get("prod") == 2, timeout=2, what="the render")
    assert not watch.wake.is_set() and hub.current("prod") is before


async def test_an_oversized_document_is_refused_and_the_last_good_stays(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    publish(store, "prod", doc("a"), 1)
    hub, stats = hub_of(store, coalesce_s=0, max_bytes=2_000)
    good = hub.current("prod")
    watch = hub.watch(Caller("prod", "server", "k"))
    with caplog.at_level(logging.ERROR, logger="flagedge.sync"):
        publish(store, "prod", doc("x" * 5_000), 2)
        await until(lambda: stats.rendered.get("prod") == 2, timeout=2, what="the render")
    assert hub.current("prod") is good and not watch.wake.is_set()
    assert stats.refused_size == {"prod": 1}
    assert "over the 2000-byte gRPC message limit" in caplog.text
    publish(store, "prod", doc("b"), 3)  # a later good document goes out again
    await until(watch.wake.is_set, timeout=2, what="the next good document")


async def test_first_rules_of_an_awaited_environment_wake_its_streams() -> None:
    store = Store()
    hub, _ = hub_of(store, coalesce_s=0)
    watch = hub.watch(Caller("new", "server", "k"))
    assert hub.current("new") is None
    publish(store, "new", doc("a"), 1)
    await until(watch.wake.is_set, timeout=2, what="the first document")
    assert hub.current("new") is not None


def test_stop_all_ends_every_watch_with_its_status() -> None:
    hub, _ = hub_of(Store())
    watches = [hub.watch(Caller(env, "server", "k")) for env in ("a", "b")]
    hub.stop_all(grpc.StatusCode.UNAVAILABLE, "bye")
    assert all(w.wake.is_set() and w.end == (grpc.StatusCode.UNAVAILABLE, "bye")
               for w in watches)
