"""Exposure counting: bulk results count by integer slots, folded in batches and at scrape."""

from __future__ import annotations

from proxy.api.cache import CachedResult
from proxy.api.metrics import PENDING_FOLD, HotMetrics


def test_bulk_entries_fold_into_the_same_counters_as_single_evaluations():
    hot = HotMetrics()
    slots = hot.exposure_slots("e", (("f", "on", "STATIC"), ("g", None, "DISABLED")))
    assert hot.exposure_slots("e", (("f", "on", "STATIC"),)) == slots[:1]  # one slot per key
    assert hot.exposure_slots("other", (("f", "on", "STATIC"),)) != slots[:1]
    entry = CachedResult(b"{", b"d" * 16, slots)
    for _ in range(3):
        hot.count_entry(entry)
    hot.count_exposures("e", (("f", "on", "STATIC"),))
    assert hot.exposures == {("e", "f", "on", "STATIC"): 4, ("e", "g", "", "DISABLED"): 3}
    hot.count_entry(entry)  # after a fold the entry starts a new batch
    assert hot.exposures[("e", "f", "on", "STATIC")] == 5


def test_pending_entries_fold_once_past_the_bound_so_they_are_not_kept_alive():
    hot = HotMetrics()
    slot = hot.exposure_slots("e", (("f", "on", "STATIC"),))
    entries = [CachedResult(b"{", bytes(16), slot) for _ in range(PENDING_FOLD)]
    for e in entries:
        hot.count_entry(e)
    assert len(hot._pending) == PENDING_FOLD
    last = CachedResult(b"{", bytes(16), slot)
    hot.count_entry(last)  # folds the others first, then waits in a new batch itself
    assert hot._pending == [last] and all(e.pending == 0 for e in entries)
    hot.count_entry(last)
    assert hot.exposures == {("e", "f", "on", "STATIC"): PENDING_FOLD + 2}
    assert [*hot.snapshot()["exposures"]] == [["e", "f", "on", "STATIC", PENDING_FOLD + 2]]


def test_entries_served_different_numbers_of_times_in_one_batch_count_exactly():
    """One fold tallies entries by how often each was served since the last: a slot two of
    them share gets each one's count."""
    hot = HotMetrics()
    on, off = hot.exposure_slots("e", (("f", "on", "TARGETING_MATCH"),
                                       ("f", "off", "TARGETING_MATCH")))
    shared = hot.exposure_slots("e", (("g", "x", "STATIC"),))[0]
    once, twice, thrice = (CachedResult(b"{", bytes(16), slots)
                           for slots in ((on, shared), (off, shared), (on, shared)))
    for entry, times in ((once, 1), (twice, 2), (thrice, 3)):
        for _ in range(times):
            hot.count_entry(entry)
    assert hot.exposures == {("e", "f", "on", "TARGETING_MATCH"): 4,
                             ("e", "f", "off", "TARGETING_MATCH"): 2,
                             ("e", "g", "x", "STATIC"): 6}
