"""Bulk result cache: LRU bound, hit/miss accounting, per-env invalidation."""

from proxy.api.cache import REAP_SLICE, CachedResult, ResultCache


def entry(n: int) -> CachedResult:
    return CachedResult(body_prefix=b'{"flags":[]', digest=bytes([n]) * 16, exposures=())


def key(env: str, version: int, ctx: bytes) -> tuple[str, str, int, bytes]:
    return (env, "epoch", version, ctx)


def test_hit_miss_and_ratio():
    cache = ResultCache(10)
    assert cache.get(key("e", 1, b"{}")) is None
    one = entry(1)
    cache.put(key("e", 1, b"{}"), one)
    assert cache.get(key("e", 1, b"{}")) is one
    assert cache.get(key("e", 2, b"{}")) is None  # new version: never the old result
    assert (cache.hits, cache.misses) == (1, 2)
    assert abs(cache.hit_ratio - 1 / 3) < 1e-9


def test_lru_evicts_least_recently_used():
    cache = ResultCache(2)
    cache.put(key("e", 1, b"a"), entry(1))
    cache.put(key("e", 1, b"b"), entry(2))
    assert cache.get(key("e", 1, b"a")) is not None  # a is now most recent
    cache.put(key("e", 1, b"c"), entry(3))
    assert len(cache) == 2
    assert cache.get(key("e", 1, b"b")) is None
    assert cache.get(key("e", 1, b"a")) is not None
    assert cache.get(key("e", 1, b"c")) is not None


def test_zero_size_disables_and_drop_env():
    off = ResultCache(0)
    off.put(key("e", 1, b"a"), entry(1))
    assert len(off) == 0
    cache = ResultCache(10)
    cache.put(key("a", 1, b"x"), entry(1))
    two = entry(2)
    cache.put(key("b", 1, b"x"), two)
    cache.drop_env("a")
    assert cache.get(key("a", 1, b"x")) is None
    assert cache.get(key("b", 1, b"x")) is two


def raw(env, version, body, ctype=b"application/json"):
    return (env, "e1", version, ctype, body)


def test_raw_aliases_count_hits_only_are_bounded_and_dropped_with_their_env():
    cache = ResultCache(2)
    one = entry(1)
    assert cache.get_raw(raw("a", 1, b"x")) is None
    assert (cache.hits, cache.misses) == (0, 0)  # the canonical lookup that follows counts it
    cache.put_raw(raw("a", 1, b"x"), one)
    assert cache.get_raw(raw("a", 1, b"x")) is one and cache.hits == 1
    assert cache.get_raw(raw("a", 1, b"x", b"text/plain")) is None
    assert cache.get_raw(raw("a", 2, b"x")) is None
    cache.put_raw(raw("a", 1, b"y"), entry(2))
    cache.put_raw(raw("b", 1, b"z"), entry(3))  # bound 2: the least recent alias ("x") goes
    assert cache.get_raw(raw("a", 1, b"x")) is None
    cache.drop_env("a")
    assert cache.get_raw(raw("a", 1, b"y")) is None
    assert cache.get_raw(raw("b", 1, b"z")) is not None


def test_a_full_cache_admits_a_context_on_its_second_sight():
    cache = ResultCache(3)
    for n in range(3):  # room: admitted at once
        assert cache.offer(key("e", 1, b"%d" % n), entry(n)) is True
    assert cache.offer(key("e", 1, b"a"), entry(7)) is False  # full: only remembered
    assert len(cache) == 3 and cache.get(key("e", 1, b"0")) is not None
    assert cache.offer(key("e", 1, b"a"), entry(7)) is True  # seen before: evicts the LRU
    assert cache.get(key("e", 1, b"a")) is not None and cache.get(key("e", 1, b"1")) is None
    assert cache.offer(key("e", 2, b"a"), entry(8)) is False  # another version: another key


def test_never_repeated_contexts_leave_a_full_cache_to_those_that_repeat():
    cache = ResultCache(50)
    for n in range(50):  # the regulars fill it
        cache.offer(key("e", 1, b"user-%d" % n), entry(n % 200))
    for n in range(10_000):  # a stream of one-off contexts evicts none of them
        cache.offer(key("e", 1, b"new-%d" % n), entry(1))
    assert len(cache) == 50
    assert all(cache.get(key("e", 1, b"user-%d" % n)) is not None for n in range(50))


def test_a_full_byte_budget_counts_as_full():
    from proxy.api.cache import key_bytes

    one = entry(1)
    budget = 20 * (key_bytes(key("e", 1, b"aa")) + one.nbytes)
    cache = ResultCache(100, budget)
    assert all(cache.offer(key("e", 1, b"%02d" % n), entry(n)) for n in range(20))
    assert len(cache) == 20
    assert cache.offer(key("e", 1, b"xx"), entry(3)) is False  # no bytes left: a first sight


def test_the_doorkeeper_forgets_after_two_generations():
    from proxy.api.cache import Doorkeeper

    door = Doorkeeper(3)
    assert not door.seen_before("a")
    for k in ("b", "c", "d"):  # "a" moves to the old generation when "d" starts a new one
        assert not door.seen_before(k)
    assert door.seen_before("a")  # still remembered (old generation)
    for k in ("e", "f", "g"):  # "g" retires the generation holding "a"
        door.seen_before(k)
    assert not door.seen_before("a")


def stepped(env: str, version: int, state: str, ctx: bytes) -> tuple[str, str, int, bytes]:
    return (env, state, version, ctx)


def reap_all(cache: ResultCache) -> int:
    """Reap with no time budget (one slice per call) until done; the number of calls."""
    calls = 1
    while cache.reap(0.0):
        calls += 1
    return calls


def test_a_retired_environment_keeps_its_live_state_and_frees_the_rest_in_slices():
    cache = ResultCache(10_000)
    for i in range(1000):  # version 1's entries and raw aliases
        one = entry(i % 256)
        cache.put(stepped("a", 1, "1-aaaa", b"%d" % i), one)
        cache.put_raw(("a", "1-aaaa", 1, b"application/json", b"%d" % i), one)
    other = entry(1)
    cache.put(stepped("b", 1, "1-bbbb", b"x"), other)
    cache.retire("a", (2, "2-cccc"))
    new, later = entry(2), entry(3)  # the new version's, put after the change
    cache.put(stepped("a", 2, "2-cccc", b"x"), new)
    cache.put(stepped("a", 2, "2-cccc~1", b"y"), later)  # a later interval of that state
    assert len(cache) == 1003  # nothing freed yet: that is the reaper's work
    assert cache.reap(0.0) is True  # one slice: REAP_SLICE keys looked at, no more
    assert len(cache) + len(cache._raw) >= 2003 - REAP_SLICE
    assert reap_all(cache) >= 2003 // REAP_SLICE - 1
    assert len(cache) == 3 and len(cache._raw) == 0
    assert cache.get(stepped("a", 2, "2-cccc", b"x")) is new
    assert cache.get(stepped("a", 2, "2-cccc~1", b"y")) is later
    assert cache.get(stepped("b", 1, "1-bbbb", b"x")) is other
    assert cache.reap(0.0) is False  # nothing left


def test_a_retire_during_a_pass_takes_another_pass_and_a_removed_env_loses_everything():
    cache = ResultCache(10_000)
    for i in range(600):
        cache.put(stepped("a", 1, "1-aaaa", b"%d" % i), entry(1))
    cache.retire("a", (2, "2-cccc"))
    assert cache.reap(0.0) is True  # one slice into the pass
    cache.put(stepped("a", 2, "2-cccc", b"v2"), entry(2))  # live now, dead after the next
    cache.retire("a", (3, "3-dddd"))
    cache.put(stepped("a", 3, "3-dddd", b"v3"), entry(3))
    reap_all(cache)
    assert [k[3] for k in cache._entries] == [b"v3"]
    cache.put(stepped("b", 1, "1-bbbb", b"x"), entry(4))
    cache.retire("a", None)  # removed
    reap_all(cache)
    assert [k[0] for k in cache._entries] == ["b"]
