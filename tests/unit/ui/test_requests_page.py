"""The pure helpers of the requests and history pages (proxy.ui.requests_page,
proxy.ui.history_page): diffs in words, conflicts explained, which controls a key gets and
why, the inbox order, the timeline's steps, and how a rollback would reach the environment;
and, in process in file mode (no Redis), the pages read-only with the banner."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from proxy.release.authorization import Actor
from proxy.release.changeset import Document, make_plan
from proxy.release.requests import Approval, Request, change_of
from proxy.storage.policy import Policy
from proxy.ui.history_page import marks, rollback_how, rollback_message, timeline
from proxy.ui.requests_page import (
    approve_message,
    conflict_of,
    controls,
    diff_rows,
    inbox_order,
    needed_approvals,
    utc,
)
from tests.unit.ui import inproc

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}
GATED = {**ON, "targeting": {"if": [{"$ref": "staff"}, "on", "off"]}}
STAFF = {"staff": {"==": [{"var": "team"}, "core"]}}
BASE = Document({"banner": ON, "checkout": ON, "gated": GATED}, STAFF, {"owner": "web"})
ANN = Actor("ann", frozenset({"view", "propose"}))
BOB = Actor("bob", frozenset({"view", "approve"}))
VIC = Actor("vic", frozenset({"view"}))
CARL = Actor("carl", frozenset({"view", "kill"}))


def request_for(new: Document, *, state: str = "open", base_version: int = 4,
                approvals: tuple[Approval, ...] = (), **fields: Any) -> Request:
    change = change_of(make_plan(BASE, new), BASE)
    return Request(id=fields.pop("id", 7), state=state, base_version=base_version,
                   author="ann", message="banner off",
                   created_at=fields.pop("created_at", 1_800_000_000.0),
                   expires_at=1_800_604_800.0, change=change, content_hash="sha256:x",
                   preview={}, approvals=approvals, **fields)


def with_flags(**flags: Any) -> Document:
    return Document({**BASE.flags, **flags}, BASE.evaluators, BASE.metadata)


def test_diff_rows_say_what_changed_inside_each_flag() -> None:
    new = Document({"banner": OFF, "gated": GATED, "fresh": ON},
                   {"staff": {"==": [{"var": "team"}, "web"]}}, {"owner": "payments"})
    rows = {row.key: row for row in diff_rows(make_plan(BASE, new))}
    assert rows["banner"].kind == "changed" and rows["banner"].sign == "~"
    assert rows["banner"].lines == ('defaultVariant: "on" -> "off"',)
    assert rows["fresh"].kind == "added" and rows["fresh"].sign == "+"
    assert rows["fresh"].lines == ("ENABLED, default on, variants off, on",)
    assert rows["checkout"].kind == "removed" and rows["checkout"].sign == "-"
    assert rows["$evaluators"].lines == ("evaluator staff changed",)
    assert rows["metadata"].kind == "metadata"
    assert diff_rows(make_plan(BASE, BASE)) == ()


def test_a_request_on_the_live_version_applies_as_proposed() -> None:
    request = request_for(with_flags(banner=OFF))
    conflict = conflict_of(request, BASE, 4)
    assert conflict.applies and "version 4, which is still live" in conflict.text


def test_changes_since_the_base_elsewhere_do_not_conflict() -> None:
    request = request_for(with_flags(banner=OFF))
    conflict = conflict_of(request, with_flags(checkout=OFF), 6)
    assert conflict.applies
    assert "live is now version 6" in conflict.text and "still applies" in conflict.text


def test_a_touched_flag_changed_since_the_base_is_a_conflict_named_in_words() -> None:
    request = request_for(with_flags(banner=OFF))
    live = with_flags(banner={**ON, "state": "DISABLED"})
    conflict = conflict_of(request, live, 5)
    assert not conflict.applies
    assert "since then flag banner changed" in conflict.text
    assert "Approving it writes nothing" in conflict.text


def test_a_referenced_evaluator_or_the_metadata_moved_is_a_conflict() -> None:
    request = request_for(with_flags(gated={**GATED, "defaultVariant": "off"}))
    live = Document(BASE.flags, {"staff": {"==": [{"var": "team"}, "ops"]}}, {"owner": "x"})
    conflict = conflict_of(request, live, 9)
    assert not conflict.applies
    assert "$evaluators.staff, metadata changed" in conflict.text


def test_the_author_may_not_approve_and_the_reason_is_authorizations() -> None:
    request = request_for(with_flags(banner=OFF))
    own = {c.name: c for c in controls(
        Actor("ann", frozenset({"propose", "approve"})), request, Policy(1))}
    assert not own["approve"].allowed
    assert own["approve"].reason == ("ann proposed this request and may not approve it "
                                     "(someone else must)")
    assert own["cancel"].allowed
    bob = {c.name: c for c in controls(BOB, request, Policy(1))}
    assert bob["approve"].allowed and bob["reject"].allowed and not bob["cancel"].allowed
    approved = request_for(with_flags(banner=OFF), approvals=(Approval("bob", 1.0, "x"),))
    again = {c.name: c for c in controls(BOB, approved, Policy(2))}
    assert again["approve"].reason == "bob already approved this request"


def test_a_view_key_and_a_read_only_page_get_no_enabled_control() -> None:
    request = request_for(with_flags(banner=OFF))
    assert not any(c.allowed for c in controls(VIC, request, Policy(1)))
    down = controls(BOB, request, Policy(1), "Redis is unreachable: read-only")
    assert {c.reason for c in down} == {"Redis is unreachable: read-only"}
    assert not any(c.allowed for c in controls(BOB, request, None))


def test_the_inbox_lists_open_requests_first_then_recent_closed_ones() -> None:
    rows = [request_for(with_flags(banner=OFF), id=i, state=s) for i, s in
            ((1, "open"), (2, "applied"), (3, "open"), (4, "rejected"), (5, "expired"))]
    assert [r.id for r in inbox_order(rows, closed=2)] == [3, 1, 5, 4]


def test_needed_approvals_follow_the_apply_script() -> None:
    request = request_for(with_flags(banner=OFF))
    assert needed_approvals(request, Policy()) == 1  # a proposal asks for review
    assert needed_approvals(request, Policy(2)) == 2
    assert needed_approvals(request.replace(apply_at=5.0), Policy()) == 0


def test_outcomes_and_times_in_words() -> None:
    assert approve_message({"status": "applied", "version": 9}).endswith("at version 9.")
    assert "1 of 2 approvals" in approve_message({"status": "pending", "approvals": 1,
                                                  "needed": 2})
    assert "2027-01-15T08:00:00Z (UTC)" in approve_message(
        {"status": "not_due", "request": {"apply_at": 1_800_000_000.0}})
    assert utc(1_800_000_000.0) == "2027-01-15T08:00:00Z (UTC, +00:00)"
    assert utc(None) == "never"


def test_the_timeline_reads_propose_approve_apply_with_names() -> None:
    request = request_for(with_flags(banner=OFF), state="applied",
                          approvals=(Approval("bob", 1_800_000_100.0, "x"),))
    entries = [{"version": 5, "at": 1_800_000_101.0, "author": "ann", "message": "banner off",
                "request": 7, "approvers": ["bob"]},
               {"version": 4, "at": 1_700_000_000.0, "author": "ops", "message": "setup"}]
    rejected = request_for(with_flags(banner=OFF), id=8, state="rejected",
                           reason="rejected by bob: not now", created_at=1_750_000_000.0)
    steps = timeline(entries, [request, rejected])
    assert [(s.kind, s.who, s.request) for s in steps] == [
        ("version", "ann", 7), ("approved", "bob", 7), ("proposed", "ann", 7),
        ("rejected", "", 8), ("proposed", "ann", 8), ("version", "ops", None)]
    assert steps[0].version == 5
    assert not steps[3].timed and "not now" in steps[3].text
    assert marks(entries[0]) == ["request #7, approved by bob"]
    assert marks({"kill": True, "author": "carl"}) == [
        "kill (applied at once in a protected environment)"]


def test_how_a_rollback_would_reach_the_environment() -> None:
    assert "kill operation" in rollback_how(CARL, Policy(1)).text
    assert rollback_how(CARL, Policy(1)).allowed
    assert rollback_how(CARL, Policy()).text == "Applied at once: the environment is not " \
                                                "protected."
    request = rollback_how(ANN, Policy(2))
    assert request.allowed and "change request that needs 2 approvals" in request.text
    refused = rollback_how(BOB, Policy(1))
    assert not refused.allowed and "needs the propose role" in refused.text
    assert not rollback_how(CARL, Policy(1), "read-only").allowed
    assert "request #3" in rollback_message({"to": 2, "status": "proposed",
                                             "request": {"id": 3}}, 202)
    assert rollback_message({"to": 2, "status": "ok", "version": 9, "marks": ["kill"]},
                            200).endswith("version 9 (marked kill).")


@pytest.mark.asyncio
async def test_in_file_mode_the_pages_render_read_only_and_refuse_actions(
        tmp_path: Path) -> None:
    """No Redis (--flags): the pages render with the banner and say why there is nothing to
    show; an action (with its CSRF token) is refused with the reason, not a blank page."""
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await inproc.sign_in(client, app.keys["admin"])
        for path in ("/ui/requests", "/ui/history"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert 'data-testid="readonly-banner"' in page.text
            assert "rules file" in page.text and 'role="alert"' in page.text
        history = await client.get("/ui/history")
        assert 'data-testid="rollback-how"' in history.text
        token = re.search(r'"X-CSRF-Token": "([^"]+)"', history.text).group(1)
        refused = await client.post("/ui/requests/1/approve", headers={"X-CSRF-Token": token})
        assert refused.status_code == 503 and "read-only" in refused.text
        rollback = await client.post("/ui/history/rollback", data={"version": "1"},
                                     headers={"X-CSRF-Token": token})
        assert rollback.status_code == 503 and "read-only" in rollback.text
        diff = await client.get("/ui/history/1/diff")
        assert "keeps no history" in diff.text
