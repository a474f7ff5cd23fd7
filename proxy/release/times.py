"""Times and durations as the release commands take them (DESIGN §10): ISO 8601 with an
offset (``2026-12-07T09:00:00Z``) or ``+DURATION``; durations ``30s``, ``5m``, ``1h``,
``2d``. Stored as Unix seconds (as the change log's ``at``); shown as ISO 8601 UTC."""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"30s"`` -> 30.0; raises ValueError naming the accepted forms. Zero is refused (a
    request that expires at once, a schedule that is due now: say so explicitly instead)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid duration {text!r}: use a positive number with s, m, h or d "
                         "(30s, 5m, 1h, 2d)")
    return float(int(match.group(1)) * _UNIT[match.group(2)])


def parse_time(text: str, now: float) -> float:
    """An absolute time (ISO 8601 with an offset) or ``+DURATION`` from ``now`` -> Unix
    seconds. A time without an offset is refused: whose 09:00 would it be?"""
    text = text.strip()
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {text!r}: use ISO 8601 with an offset "
                         "(2026-12-07T09:00:00Z) or +DURATION (+30m)") from None
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset: add Z or +HH:MM")
    return when.timestamp()


def iso(ts: float) -> str:
    """Unix seconds -> ``2026-12-07T09:00:00Z`` (UTC, whole seconds)."""
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
