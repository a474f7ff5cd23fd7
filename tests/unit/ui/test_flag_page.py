"""proxy.ui.flag_view (the flag page's pure helpers: which controls release/ lets a key use,
the editor's parse errors, the diff, the impact per variant, rollout steps, answers in words)
and proxy.ui.flag_page in process in file mode (read-only: every control disabled)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from proxy.release.authorization import Actor
from proxy.storage.policy import Policy
from proxy.ui.flag_view import (
    CHANGES,
    KILLS,
    ParseError,
    flag_controls,
    json_diff,
    op_body,
    parse_flag,
    parse_steps,
    problem_path,
    rollout_steps,
    variant_shifts,
    with_flag,
    written,
)
from tests.unit.ui import inproc

OPEN, PROTECTED = Policy(), Policy(2)


def actor(*roles: str) -> Actor:
    return Actor("ann", frozenset(roles))


def test_a_propose_holder_saves_directly_where_the_environment_is_not_protected() -> None:
    controls = flag_controls(actor("propose"), OPEN, rollout_state="running")
    assert all(controls[name].enabled and not controls[name].request
               for name in (*CHANGES, *KILLS))
    assert controls["save"].label == "Save" and controls["save"].note == ""


def test_a_protected_environment_turns_changes_into_requests_and_kills_stay_direct() -> None:
    controls = flag_controls(actor("propose", "kill"), PROTECTED, rollout_state="running")
    save = controls["save"]
    assert (save.enabled, save.label, save.request) == (True, "Propose", True)
    assert "change request that needs 2 approvals" in save.note
    assert controls["percent"].request and controls["rollout_start"].request
    for name in KILLS:  # a kill holder's kill operations apply at once, marked kill
        assert controls[name].enabled and not controls[name].request
        assert "marked kill" in controls[name].note
    without_kill = flag_controls(actor("propose"), PROTECTED, rollout_state="running")
    assert without_kill["disable"].request and "becomes a change request" in \
        without_kill["disable"].note


def test_a_view_key_has_every_write_control_disabled_with_releases_reason() -> None:
    controls = flag_controls(actor("view"), PROTECTED, rollout_state="running")
    for name in (*CHANGES, *KILLS):
        assert not controls[name].enabled
        assert controls[name].note == ("ann may not change this environment: it needs the "
                                       "propose role.")


def test_read_only_disables_everything_and_says_why() -> None:
    for policy in (OPEN, None):
        controls = flag_controls(actor("propose", "kill", "manage"), policy,
                                 read_only="Redis is unreachable", rollout_state="running")
        assert not any(c.enabled for c in controls.values())
        assert controls["save"].note.startswith("Read-only: ")


def test_pause_and_abort_follow_the_rollouts_state() -> None:
    def enabled(state: str | None) -> tuple[bool, bool]:
        controls = flag_controls(actor("propose", "kill"), OPEN, rollout_state=state)
        return controls["rollout_pause"].enabled, controls["rollout_abort"].enabled

    assert enabled("running") == (True, True)
    assert enabled("paused") == (False, True)
    assert enabled(None) == enabled("aborted") == enabled("done") == (False, False)
    off = flag_controls(actor("propose", "kill"), OPEN)["rollout_pause"]
    assert off.note == "No rollout is running."


def test_parse_flag_says_where_the_json_breaks() -> None:
    broken = parse_flag('{\n  "state": "ENABLED",\n  oops\n}')
    assert isinstance(broken, ParseError) and (broken.line, broken.column) == (3, 3)
    assert parse_flag("[1]") == ParseError("a flag is a JSON object ({ ... })", 1, 1)
    assert parse_flag('{"state": "ENABLED"}') == {"state": "ENABLED"}


def test_the_diff_ignores_key_order_and_marks_changed_lines() -> None:
    live = {"state": "ENABLED", "defaultVariant": "off", "variants": {"on": True, "off": False}}
    same = {"variants": {"off": False, "on": True}, "defaultVariant": "off", "state": "ENABLED"}
    assert json_diff(live, same) == []
    lines = json_diff(live, {**live, "defaultVariant": "on"})
    assert [(d.kind, d.text) for d in lines if d.kind in ("add", "remove")] == [
        ("remove", '-  "defaultVariant": "off",'), ("add", '+  "defaultVariant": "on",')]
    assert lines[0].kind == "hunk"
    added = json_diff(None, {"state": "ENABLED"})  # a new flag: everything is added
    assert {d.kind for d in added} == {"hunk", "add", "remove"}


def test_the_impact_is_summed_per_variant() -> None:
    shifts = variant_shifts([{"from": "off", "to": "on", "count": 70},
                             {"from": "control", "to": "on", "count": 5},
                             {"from": "off", "to": "control", "count": 2}])
    assert [(s.variant, s.leaving, s.arriving) for s in shifts] == [
        ("control", 5, 2), ("off", 72, 0), ("on", 0, 75)]


def test_rollout_steps_have_their_times_and_the_current_one() -> None:
    status = {"steps": [5, 25, 100], "every": 3600, "start": 1_000, "step": 2}
    steps = rollout_steps(status)
    assert [(s.number, s.percent, s.begins, s.current) for s in steps] == [
        (1, 5, 1_000.0, False), (2, 25, 4_600.0, True), (3, 100, 8_200.0, False)]
    assert not any(s.current for s in rollout_steps({**status, "step": 0}))


def test_steps_and_switch_forms_become_handler_bodies() -> None:
    assert parse_steps("5, 25,50,100") == [5, 25, 50, 100]
    assert parse_steps("5,x").startswith("Steps: whole percentages")
    assert op_body({"op": "disable", "variant": "on"}) == {"op": "disable"}
    assert op_body({"op": "percent", "variant": "on", "percent": "25", "message": " why "}) == {
        "op": "percent", "variant": "on", "percent": 25, "message": "why"}
    assert op_body({"op": "percent", "percent": "lots"}) == (
        "Percentage: a whole number from 0 to 100.")
    assert op_body({"op": "default", "variant": "off"}) == {"op": "default", "variant": "off"}


def test_answers_read_as_what_happened() -> None:
    conflict = written(409, {"errorCode": "CONFLICT", "version": 9}, "x", base_version=7)
    assert conflict.kind == "conflict"
    assert conflict.text.startswith("Conflict: version 9 is live, but you edited version 7.")
    created = written(200, {"id": 4, "content_hash": "h", "base_version": 7}, approvals=1)
    assert (created.kind, created.request_id, created.text) == (
        "proposed", 4, "Request #4 proposed: needs 1 approval.")
    edit = written(202, {"status": "proposed", "request": {"id": 5}}, approvals=2)
    assert edit.text == "Request #5 proposed: needs 2 approvals."
    assert written(200, {"status": "ok", "version": 8, "marks": ["kill"]}).text == (
        "Written as version 8 (marked kill).")
    assert written(200, {"status": "ok", "version": 8, "marks": []}).text == (
        "Written as version 8.")
    assert written(200, {"status": "noop", "version": 8}).kind == "noop"
    problems = ({"path": "document: flags.a.defaultVariant", "message": "bad"},)
    refused = written(422, {}, "1 problem", problems)
    assert (refused.kind, refused.text, refused.problems) == (
        "refused", "Nothing was written: 1 problem in the document.", problems)
    assert written(403, {}, "ann may not change this environment").text == (
        "ann may not change this environment")
    assert problem_path(problems[0]["path"]) == "flags.a.defaultVariant"
    assert problem_path("document") == "(document)"


def test_the_edited_flag_replaces_only_its_key() -> None:
    doc = {"flags": {"a": {"state": "ENABLED"}, "b": {"state": "DISABLED"}},
           "$evaluators": {"x": {}}}
    out = with_flag(doc, "a", {"state": "DISABLED"})
    assert out == {"flags": {"a": {"state": "DISABLED"}, "b": {"state": "DISABLED"}},
                   "$evaluators": {"x": {}}}
    assert doc["flags"]["a"] == {"state": "ENABLED"}  # the live document is left alone


# -- the page in process, file mode (no Redis: read-only) ---------------------------------
@pytest.mark.asyncio
async def test_in_file_mode_the_flag_page_is_read_only_and_writes_are_refused(
        tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await inproc.sign_in(client, app.keys["admin"])
        page = await client.get("/ui/flags/bool-flag")
        assert page.status_code == 200
        assert 'data-testid="readonly-banner"' in page.text
        main = page.text.split('<main id="main">', 1)[1]  # (sign-out, in the header, works)
        buttons = re.findall(r"<button [^>]*data-testid=\"([a-z-]+)\"[^>]*>", main)
        tags = re.findall(r"<button [^>]*data-testid=\"[a-z-]+\"[^>]*>", main)
        assert set(buttons) >= {"disable", "enable", "default", "percent", "save", "check",
                                "rollout-start", "rollout-pause", "rollout-abort"}
        assert all(" disabled" in tag for tag in tags), tags
        assert "Read-only: This proxy serves a rules file" in page.text
        token = orjson.loads(re.search(r"hx-headers='([^']+)'", page.text).group(1))
        refused = await client.post("/ui/flags/bool-flag/edit", data={"op": "disable"},
                                    headers=token)
        assert refused.status_code == 503 and "read-only" in refused.text
        missing = await client.get("/ui/flags/no-such-flag")
        assert missing.status_code == 404 and 'data-testid="flag-missing"' in missing.text
        listed = await client.get("/ui/flags")
        assert 'href="/ui/flags/bool-flag"' in listed.text
        kill_buttons = re.findall(r"<button [^>]*data-testid=\"kill\"[^>]*>", listed.text)
        assert kill_buttons and all(" disabled" in b for b in kill_buttons)
