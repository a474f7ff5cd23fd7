"""release/times.py: durations and times as the release commands take them (DESIGN §10)."""

from __future__ import annotations

import pytest

from proxy.release.times import iso, parse_duration, parse_time


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "0s", "-5m", "1w", "1.5h", "h"])
def test_bad_durations_name_the_forms(bad):
    with pytest.raises(ValueError, match="30s, 5m, 1h, 2d"):
        parse_duration(bad)


def test_times():
    now = 1_800_000_000.0
    assert parse_time("+30m", now) == now + 1800
    assert parse_time("2026-12-07T09:00:00Z", now) == 1796634000.0
    assert parse_time("2026-12-07T10:00:00+01:00", now) == 1796634000.0
    assert iso(1796634000.4) == "2026-12-07T09:00:00Z"
    with pytest.raises(ValueError, match="no offset"):
        parse_time("2026-12-07T09:00:00", now)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("tomorrow", now)
