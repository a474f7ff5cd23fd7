"""proxy.ui.live's pure pieces: a connection's pending set (its bounded queue: a burst is one
event), the coalescing clock, what an outbox entry says changed, a listener's wake-ups; and
the stream refused (401, never a redirect) without a session."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.config import Settings
from proxy.ui import sessions
from proxy.ui.live import (
    COALESCE_S,
    COUNTS,
    KINDS,
    REQUESTS,
    ROLLOUTS,
    RULES,
    Listener,
    Pending,
    opened_event,
    outbox_kind,
    send_at,
)
from tests.unit.ofrep_app import ENV, App


def test_a_burst_of_notes_is_one_event_with_the_newest_version() -> None:
    pending = Pending()
    assert not pending and pending.take() is None
    for version in range(1, 10_001):
        pending.note(RULES, version)
        pending.note(REQUESTS)
        assert len(pending.kinds) <= len(KINDS)  # bounded whatever the burst
    pending.note(RULES, 3)  # an older version never hides the newest
    assert pending.take() == {"what": [RULES, REQUESTS], "version": 10_000}
    assert not pending and pending.take() is None  # taken: nothing left


def test_an_event_lists_every_kind_in_a_fixed_order_and_a_version_only_with_rules() -> None:
    pending = Pending()
    for kind in (COUNTS, ROLLOUTS, REQUESTS):
        pending.note(kind)
    assert pending.take() == {"what": [REQUESTS, ROLLOUTS, COUNTS]}
    with pytest.raises(ValueError):
        pending.note("everything")


def test_events_are_spaced_by_the_coalescing_interval() -> None:
    assert send_at(None, 100.0) == 100.0  # first event: at once
    assert send_at(100.0, 100.1) == pytest.approx(100.0 + COALESCE_S)  # too soon: waits
    assert send_at(100.0, 105.0) == 105.0  # after a quiet spell: at once


def test_an_outbox_entry_says_what_changed() -> None:
    assert outbox_kind({b"type": b"request", b"event": b"proposed", b"request": b"3"}) == (
        REQUESTS, None)
    assert outbox_kind({b"type": b"change", b"version": b"7", b"after": b"{}"}) == (RULES, 7)
    assert outbox_kind({"type": "change"}) == (RULES, None)
    assert outbox_kind({b"type": b"something-new"}) is None
    assert outbox_kind({}) is None


async def test_a_listener_wakes_on_a_note_and_on_close_and_times_out_otherwise() -> None:
    listener = Listener(sessions.Session("sid", "kid", ENV, 2**40))
    assert await listener.wait(0.01) is False  # nothing noted
    waiting = asyncio.create_task(listener.wait(5))
    await asyncio.sleep(0)
    listener.note(RULES, 2)
    assert await waiting is True
    assert listener.pending.take() == {"what": [RULES], "version": 2}
    listener.close()
    assert await listener.wait(5) is True and listener.closed
    listener.note(COUNTS)  # a closed listener holds nothing more
    assert not listener.pending


async def test_the_stream_without_a_session_is_401_not_a_redirect(tmp_path: Path) -> None:
    rules = tmp_path / "flags.json"
    rules.write_text(orjson.dumps({"flags": {}}).decode())
    app = App(Settings(env=ENV, flags=rules))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app),
                                 base_url="http://edge.example") as client:
        answer = await client.get("/ui/events")
        assert answer.status_code == 401
        assert "location" not in answer.headers
        client.cookies.set("flagedge_ui", "x.y")
        forged = await client.get("/ui/events")
        assert forged.status_code == 401


def test_a_stream_opens_with_an_event_that_says_everything_changed() -> None:
    """What changed between a page's render and its stream's open precedes the watcher's
    position: the first event makes the page re-fetch every live region."""
    event = opened_event()
    assert event.event == "changed"
    assert orjson.loads(event.data) == {"what": list(KINDS), "opened": True}


def test_every_live_region_is_the_macros_which_swaps_its_content_not_itself() -> None:
    """A region written by hand could swap itself again (outerHTML), and htmx would drop the
    reload it queued meanwhile: live regions come from live_macros.html only."""
    templates = Path(__file__).resolve().parents[3] / "proxy" / "ui" / "templates"
    tag = re.compile(r'<\w[^>]*hx-trigger="sse:')  # an element's, not a comment's
    by_hand = [t.name for t in templates.glob("*.html")
               if t.name != "live_macros.html" and tag.search(t.read_text())]
    assert by_hand == []
    uses = [t.name for t in templates.glob("*.html") if "{% call live_region(" in t.read_text()]
    assert len(uses) >= 9  # every page with a live region (flag.html holds two)
