"""What a provider reports to POST /v1/exposures, and how insights name exposures in Redis."""

import pytest

from proxy.api.exposures import BadReport, parse_report
from proxy.api.metrics import MAX_USERS_PER_FLUSH, HotMetrics
from proxy.storage import insights as keys


def test_a_report_is_an_array_or_an_object_holding_one():
    items = [{"flag": "a", "variant": "on", "reason": "STATIC", "count": 3},
             {"flag": "b", "variant": None, "reason": "DISABLED"}]
    assert parse_report(b'{"exposures": %s}' % __import__("orjson").dumps(items)) == [
        ("a", "on", "STATIC", 3), ("b", None, "DISABLED", 1)]


@pytest.mark.parametrize(("body", "where"), [
    (b"nope", "not JSON"),
    (b'{"flags": []}', "$.exposures: expected an array"),
    (b'[{"flag": "", "reason": "STATIC"}]', "$[0].flag"),
    (b'[{"flag": "a", "variant": 1, "reason": "STATIC"}]', "$[0].variant"),
    (b'[{"flag": "a", "reason": "SPLIT"}]', "$[0].reason"),
    (b'[{"flag": "a", "reason": "STATIC", "count": 0}]', "$[0].count"),
    (b'[{"flag": "a", "reason": "STATIC", "count": 1.5}]', "$[0].count"),
    (b'[{"flag": "a", "reason": "STATIC"}, 7]', "$[1]: expected an object"),
])
def test_a_bad_report_names_its_first_problem(body, where):
    with pytest.raises(BadReport, match=__import__("re").escape(where)):
        parse_report(body)


def test_fields_round_trip_any_flag_key():
    for flag in ("plain", "with|pipe", 'quote"s', "ünï"):
        assert keys.parse_field(keys.field(flag, "v", "STATIC")) == (flag, "v", "STATIC")
    assert keys.parse_field(b"flag|v|STATIC") is None  # not ours: skipped, never misread


def test_minutes_and_days_of_a_window():
    assert list(keys.minutes_between(120.0, 239.0)) == ["197001010002", "197001010003"]
    assert list(keys.days_between(0.0, 86_400.0)) == ["19700101", "19700102"]


def test_users_held_between_flushes_are_bounded_and_drops_counted():
    hot = HotMetrics()
    for i in range(MAX_USERS_PER_FLUSH + 5):
        hot.see_user("e", f"u{i}")
    hot.see_user("e", "u1")  # already held: not a drop
    assert len(hot.users["e"]) == MAX_USERS_PER_FLUSH and hot.dropped["users"] == 5
    assert len(hot.take_users()["e"]) == MAX_USERS_PER_FLUSH and hot.take_users() == {}


async def test_the_first_flush_of_a_new_utc_day_calls_on_new_day():
    """The result cache drops its raw-body aliases then, so every user is parsed (and
    counted) at least once a day (docs/design-notes.md, Insights)."""
    import redis.asyncio

    from proxy.insights.exposures import Flusher
    from proxy.store import Store

    clock = [86_400 * 20_000 + 86_390.0]  # ten seconds before a UTC midnight
    called: list[float] = []
    unused = redis.asyncio.Redis(port=1)  # never connected: nothing to write here
    flusher = Flusher(unused, HotMetrics(), Store(), days=1, clock=lambda: clock[0],
                      on_new_day=lambda: called.append(clock[0]))
    await flusher.flush()
    assert called == []
    clock[0] += 20  # past midnight
    await flusher.flush()
    await flusher.flush()
    assert called == [clock[0]]
