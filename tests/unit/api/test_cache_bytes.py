"""Memory bounds (issue 20): the result cache and the bulk-body memo are bounded by bytes,
keep LRU order under that bound, skip items too large for it, and account close to what the
heap really holds (tracemalloc), never much less; the gauge sums what live workers hold."""

from __future__ import annotations

import gc
import os
import random
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.api.bulk_body import BulkBodies, ofrep_item, vector_bytes
from proxy.api.cache import MAX_ITEM_SHARE, CachedResult, ResultCache, key_bytes
from proxy.api.metrics import PENDING_FOLD_BYTES, FlagedgeCollector, HotMetrics
from proxy.config import Settings, SettingsError, load_settings
from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate_all
from proxy.evaluation.plan import memo_bytes, plan_of
from proxy.model import FlagSet
from proxy.store import Store
from tests.unit.ofrep_app import ENV, App

KB = 1024
SLOTS = [1_000_000 + i for i in range(50)]  # exposure slots: ints owned by the metrics


def big_entry(body_kb: int = 50) -> CachedResult:
    return CachedResult(os.urandom(body_kb * KB), os.urandom(16), tuple(SLOTS))


def ckey(i: int, env: str = "e", pad: int = 4000) -> tuple[str, str, int, bytes]:
    return (env, "epoch", 1, b"%08d" % i + b"x" * pad)


def rkey(i: int, env: str = "e", pad: int = 4000) -> tuple[str, str, int, bytes | None, bytes]:
    return (env, "epoch", 1, b"application/json", b"%08d" % i + b"y" * pad)


def heap_growth(fill: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes the Python heap grew by while ``fill`` ran (what it returns is kept)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


# -- result cache ------------------------------------------------------------------------------
def test_result_cache_stays_under_its_byte_budget_and_keeps_lru_order() -> None:
    budget = 2 * 1024 * KB  # ~37 entries of a 50 KB body and a 4 KB context
    cache = ResultCache(max_entries=10_000, max_bytes=budget)
    first = big_entry()
    cache.put(ckey(0), first)
    for i in range(1, 400):
        cache.put(ckey(i), big_entry())
        assert cache.bytes <= budget
        assert cache.get(ckey(0)) is first  # used all along: never the one evicted
    n = len(cache)
    assert 30 <= n < 40
    # LRU order: the newest n - 1 and entry 0 (used last), oldest first.
    assert list(cache._entries) == [ckey(i) for i in range(400 - (n - 1), 400)] + [ckey(0)]
    assert cache.bytes == sum(key_bytes(k) + e.nbytes for k, e in cache._entries.items())


def test_aliases_are_bounded_with_the_entries_and_a_body_is_counted_once() -> None:
    cache = ResultCache(max_entries=10_000, max_bytes=10**9)
    one = big_entry()
    cache.put(ckey(0), one)
    alone = cache.bytes
    assert alone == key_bytes(ckey(0)) + one.nbytes
    for i in range(5):  # five raw spellings of one context
        cache.put_raw(rkey(i), one)
    assert cache.bytes == alone + sum(key_bytes(rkey(i)) for i in range(5))
    cache.drop_env("e")
    assert cache.bytes == 0 and one.refs == 0

    small = ResultCache(max_entries=10_000, max_bytes=1024 * KB)
    for i in range(300):  # each alias its own entry: the aliases evict, and stay LRU
        small.put_raw(rkey(i), big_entry())
        assert small.bytes <= small.max_bytes
        assert small.get_raw(rkey(0)) is not None
    assert small.get_raw(rkey(1)) is None and small.get_raw(rkey(299)) is not None


def recount(cache: ResultCache) -> int:
    """The bytes held, counted from scratch: every key, every distinct entry once."""
    held = {**{id(e): e for e in cache._entries.values()}, **{id(e): e for e in cache._raw.values()}}
    return (sum(map(key_bytes, cache._entries)) + sum(map(key_bytes, cache._raw))
            + sum(e.nbytes for e in held.values()))


def test_accounting_stays_exact_through_any_mix_of_operations() -> None:
    """Random puts, aliases (sharing entries or not), hits, replacements, env drops and
    retirements freed a slice at a time, with both bounds in play: the running count always
    equals a recount, under the budget."""
    rnd = random.Random(20)
    cache = ResultCache(max_entries=60, max_bytes=256 * KB)
    recent: list[CachedResult] = []
    for step in range(3000):
        op = rnd.random()
        env = rnd.choice("ab")
        i = rnd.randrange(150)
        if op < 0.4:
            entry = big_entry(rnd.choice((1, 3, 8)))
            recent = [entry, *recent[:5]]
            cache.put(ckey(i, env, pad=rnd.choice((10, 2000, 4000))), entry)
        elif op < 0.75 and recent:
            cache.put_raw(rkey(i, env, pad=rnd.choice((10, 2000, 4000))), rnd.choice(recent))
        elif op < 0.95:
            cache.get(ckey(i, env)) or cache.get_raw(rkey(i, env))
        elif op < 0.975:
            cache.drop_env(env)
        else:  # a change: freed a slice at a time, the cache in use meanwhile
            cache.retire(env, (rnd.choice((1, 2)), "epoch"))
        cache.reap(0.0)
        assert cache.bytes == recount(cache) <= cache.max_bytes, step
        assert len(cache._entries) <= 60 and len(cache._raw) <= 60
    assert all(e.refs == 0 for e in recent if e not in cache._entries.values()
               and e not in cache._raw.values())


def test_an_entry_over_a_share_of_the_budget_is_not_cached() -> None:
    budget = 1024 * KB
    cache = ResultCache(max_entries=10_000, max_bytes=budget)
    kept = big_entry()
    cache.put(ckey(0), kept)
    huge = big_entry(body_kb=budget // MAX_ITEM_SHARE // KB)
    cache.put(ckey(1), huge)
    cache.put_raw(rkey(1), huge)
    assert cache.get(ckey(1)) is None and cache.get_raw(rkey(1)) is None
    assert cache.get(ckey(0)) is kept and huge.refs == 0


def test_cache_size_still_bounds_entries_and_zero_bytes_turns_the_cache_off() -> None:
    counted = ResultCache(max_entries=3, max_bytes=10**9)
    for i in range(10):
        counted.put(ckey(i), big_entry(1))
    assert len(counted) == 3
    assert counted.bytes == sum(key_bytes(ckey(i)) + big_entry(1).nbytes for i in range(3))
    off = ResultCache(max_entries=10, max_bytes=0)
    off.put(ckey(0), big_entry(1))
    assert len(off) == 0 and off.bytes == 0


def test_result_cache_accounting_matches_the_heap() -> None:
    """The accounted bytes match what the heap holds for the cache (2 % under to 15 % over)."""
    cache = ResultCache(max_entries=100_000, max_bytes=10**10)

    def fill() -> ResultCache:
        for i in range(2000):
            entry = big_entry(body_kb=2)
            cache.put(ckey(i, pad=300), entry)
            if i % 2:
                cache.put_raw(rkey(i, pad=300), entry)
        return cache

    real, _ = heap_growth(fill)
    assert 0.98 * real <= cache.bytes <= 1.15 * real, (real, cache.bytes)


# -- bulk bodies ---------------------------------------------------------------------------------
def split_doc(n_flags: int, value_chars: int, n_static: int = 0) -> dict[str, Any]:
    """Fractional flags with long string values: nearly every user gets a body of its own;
    ``n_static`` static flags besides (as in large environments: about half)."""
    flags = {f"f{i:03d}": {"state": "ENABLED", "defaultVariant": "a",
                           "variants": {v: f"{v}{i}-" + "x" * value_chars for v in "abc"},
                           "targeting": {"fractional": [["a", 1], ["b", 1], ["c", 1]]}}
             for i in range(n_flags)}
    flags.update({f"s{i:03d}": {"state": "ENABLED", "defaultVariant": "on",
                                "variants": {"on": True, "off": False}}
                  for i in range(n_static)})
    return {"flags": flags, "metadata": {"flagSetId": "mem"}}


@pytest.fixture(scope="module")
def split_set() -> FlagSet:
    return compile_document(split_doc(40, 1000), version=1, epoch="x")  # ~42 KB bodies


def bulk(bodies: BulkBodies, fs: FlagSet, user: int, env: str = "e") -> CachedResult:
    return bodies.body(env, fs, evaluate_all(fs, {"targetingKey": f"user-{user}"}))


def vector(fs: FlagSet, user: int) -> tuple[bytes, ...]:
    """A user's key in the body memo: the dynamic flags' items as JSON, output order."""
    dynamic = plan_of(fs).evaluate({"targetingKey": f"user-{user}"})
    return tuple(orjson.dumps(ofrep_item(r, fs.flags[r.key]), option=orjson.OPT_SORT_KEYS)
                 for r in sorted(dynamic, key=lambda r: r.key))


def one_vector(fs: FlagSet) -> int:
    """The accounted bytes of one memoised vector of ``fs``."""
    entry = bulk(BulkBodies(HotMetrics()), fs, 0)
    return vector_bytes(entry, entry.fragments)


def test_entries_hold_pointers_to_shared_fragments_not_bodies(split_set: FlagSet) -> None:
    bodies = BulkBodies(HotMetrics())
    one, two = bulk(bodies, split_set, 1), bulk(bodies, split_set, 2)
    assert len(one.body_prefix) > 40 * KB and one.nbytes < 2 * KB  # 40 flags: 80 pointers
    shared = {id(f) for f in one.fragments} & {id(f) for f in two.fragments}
    assert len(shared) >= 5  # ~a third of the flags give both users the same item
    assert one.body(b"}") == one.body_prefix + b"}"
    assert orjson.loads(one.body(b"}"))["flags"] == sorted(
        (r.to_ofrep() for r in evaluate_all(split_set, {"targetingKey": "user-1"})),
        key=lambda item: item["key"])


def test_bodies_stay_under_their_byte_budget_and_keep_lru_order(split_set: FlagSet) -> None:
    budget = 45 * one_vector(split_set)
    bodies = BulkBodies(HotMetrics(), max_bytes=budget)
    first = bulk(bodies, split_set, 0)
    for user in range(1, 300):
        bulk(bodies, split_set, user)
        assert bodies.bytes <= budget
        assert bulk(bodies, split_set, 0) is first  # a hit: still memoised, moved to the end
    memo = bodies._sets["e"]
    assert 40 <= len(memo.vectors) <= 45
    assert bodies.bytes == sum(vector_bytes(e, v) for v, e in memo.vectors.items())
    n = len(memo.vectors)
    # LRU order: the newest n - 1 users and user 0 (used last), oldest first.
    assert list(memo.vectors) == [vector(split_set, u) for u in range(300 - (n - 1), 300)] + [
        vector(split_set, 0)]


def test_bodies_share_the_budget_fairly_across_environments(split_set: FlagSet) -> None:
    size = one_vector(split_set)
    budget = 45 * size
    bodies = BulkBodies(HotMetrics(), max_bytes=budget)
    for user in range(200):
        bulk(bodies, split_set, user, env="busy")
    for user in range(200):  # a second environment arrives once the budget is full
        bulk(bodies, split_set, 1000 + user, env="quiet")
        assert bodies.bytes <= budget
    quiet, busy = bodies._sets["quiet"].bytes, bodies._sets["busy"].bytes
    assert quiet >= busy - 2 * size
    bodies.drop_env("busy")
    assert bodies.bytes == bodies._sets["quiet"].bytes
    fs2 = compile_document(split_doc(40, 1000), version=2, epoch="x")
    bulk(bodies, fs2, 0, env="quiet")  # a new flag set: the old one's bodies are released
    again = bulk(bodies, fs2, 0, env="quiet")
    assert bodies.bytes == bodies._sets["quiet"].bytes == vector_bytes(again, again.fragments)


def test_a_body_over_a_share_of_the_budget_is_not_memoised(split_set: FlagSet) -> None:
    bodies = BulkBodies(HotMetrics(), max_bytes=16 * one_vector(split_set) - 16)
    assert bulk(bodies, split_set, 1) is not bulk(bodies, split_set, 1)
    assert bodies.bytes == 0
    off = BulkBodies(HotMetrics(), max_bytes=0)
    assert bulk(off, split_set, 1).body_prefix == bulk(bodies, split_set, 1).body_prefix


def test_bodies_accounting_matches_the_heap(split_set: FlagSet) -> None:
    bodies = BulkBodies(HotMetrics(), max_bytes=10**10)
    for user in range(50):  # every result serialised once: not the memo's bytes
        bulk(bodies, split_set, user)
    before = bodies.bytes
    # evaluated beforehand: the plan's memos are not the bodies' bytes
    results = [evaluate_all(split_set, {"targetingKey": f"user-{u}"}) for u in range(1000, 1400)]

    def fill() -> None:
        for r in results:
            bodies.body("e", split_set, r)

    real, _ = heap_growth(fill)
    accounted = bodies.bytes - before
    assert 0.98 * real <= accounted <= 1.15 * real, (real, accounted)


@pytest.fixture(scope="module")
def large_set() -> FlagSet:
    """350 flags, half static, half fractional (the issue's large environment)."""
    return compile_document(split_doc(175, 40, n_static=175), version=1, epoch="x")


def test_ten_thousand_users_of_350_flags_fit_the_default_budgets(large_set: FlagSet) -> None:
    """Issue 27: a whole ~30 KB body per entry let the 64 MB default keep ~1,800 of 10,000
    users; entries of pointers to shared items keep them all (and the memo most of them)."""
    settings = Settings()
    cache = ResultCache(settings.cache_size, settings.cache_bytes)
    bodies = BulkBodies(HotMetrics(), settings.bodies_bytes)
    for user in range(10_000):
        cache.put(ckey(user, pad=200), bulk(bodies, large_set, user))
    assert len(bulk(bodies, large_set, 0).body_prefix) > 20 * KB
    assert len(cache) == 10_000 and cache.bytes <= cache.max_bytes
    assert bodies.bytes <= bodies.max_bytes and len(bodies._sets["e"].vectors) > 5_000
    assert cache.get(ckey(0, pad=200)) is not None


def test_result_cache_accounting_of_spliced_entries_matches_the_heap(large_set: FlagSet) -> None:
    """Entries share their items (serialised once, held by the items memo): what an entry adds
    is its pointers, and that is what the cache accounts."""
    bodies = BulkBodies(HotMetrics(), max_bytes=0)  # no memo: the cache's entries only
    for user in range(300):  # every item serialised
        bulk(bodies, large_set, user)
    cache = ResultCache(max_entries=100_000, max_bytes=10**10)
    results = [evaluate_all(large_set, {"targetingKey": f"user-{u}"}) for u in range(2000)]

    def fill() -> None:
        for user, r in enumerate(results):
            entry = bodies.body("e", large_set, r)
            cache.put(ckey(user, pad=200), entry)
            if user % 2:
                cache.put_raw(rkey(user, pad=200), entry)

    real, _ = heap_growth(fill)
    assert 0.98 * real <= cache.bytes <= 1.15 * real, (real, cache.bytes)


def test_metrics_read_the_bytes_each_cache_holds(split_set: FlagSet) -> None:
    hot = HotMetrics()
    bodies = BulkBodies(hot, max_bytes=10**9)
    bulk(bodies, split_set, 1)
    assert hot.snapshot()["held"]["bulk_bodies"] == bodies.bytes > 0


def test_pending_exposures_keep_at_most_a_few_mb_of_bodies_alive() -> None:
    """A bulk response's entry waits in the metrics until its exposures are folded in; it
    keeps its body alive meanwhile, so the wait list is bounded by bytes too."""
    hot = HotMetrics()
    slot = hot.exposure_slot("e", "f", "on", "STATIC")
    entries = [CachedResult(os.urandom(1024 * KB), b"d" * 16, (slot,)) for _ in range(40)]
    for entry in entries:
        hot.count_entry(entry)
        assert sum(len(e.body_prefix) for e in hot._pending) <= PENDING_FOLD_BYTES + 1024 * KB
    assert hot.exposures == {("e", "f", "on", "STATIC"): 40}  # none lost by folding early


def test_the_gauge_sums_live_workers_and_ignores_stale_snapshots(tmp_path: Path) -> None:
    hot = HotMetrics()
    hot.held["results"] = lambda: 1000
    hot.held["bulk_bodies"] = lambda: 10
    other = {**hot.snapshot(), "held": {"results": 500, "bulk_bodies": 5}}
    (tmp_path / "worker-1.json").write_bytes(orjson.dumps(other))
    stale = {**other, "at": other["at"] - 3600}  # a dead worker's last snapshot
    (tmp_path / "worker-2.json").write_bytes(orjson.dumps(stale))
    families = {m.name: m for m in FlagedgeCollector(hot, Store(), tmp_path).collect()}
    held = {s.labels["cache"]: s.value for s in families["flagedge_cache_bytes"].samples}
    assert held == {"results": 1500, "bulk_bodies": 15}


async def test_settings_reach_the_caches_and_the_gauge_reports_them() -> None:
    app = App(Settings(env=ENV, cache_bytes=3 * 1024 * KB, bodies_bytes=5 * 1024 * KB))
    hot = app.runtime.metrics.hot
    assert app.runtime.cache.max_bytes == 3 * 1024 * KB
    assert hot.held["bulk_bodies"].__self__.max_bytes == 5 * 1024 * KB  # type: ignore[attr-defined]
    async with app.client() as client:
        r = await client.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}})
        assert r.status_code == 200
        metrics = (await client.get("/metrics")).text
    held = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^flagedge_cache_bytes\{cache="([^"]+)"\} (\S+)$', metrics, re.M)}
    assert held["results"] == app.runtime.cache.bytes > 0
    assert held["bulk_bodies"] > 0 and "semver" in held
    assert held["plan_memos"] == memo_bytes(app.store.get(ENV)) > 0  # "plan" memoised
    with pytest.raises(SettingsError, match="cache_bytes"):
        load_settings(environ={"FLAGEDGE_CACHE_BYTES": "-1"})
    with pytest.raises(SettingsError, match="bodies_bytes"):
        load_settings(environ={"FLAGEDGE_BODIES_BYTES": "-5"})
