"""Outbox entries as webhook messages (json and slack), without I/O."""

from __future__ import annotations

import orjson

from proxy.release import messages
from proxy.release.requests import Request

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}
ENTRY_ID = "1765000000000-3"


def change_fields(**extra: str) -> dict[str, str]:
    return {"type": "change", "change_id": ENTRY_ID, "version": "7", "epoch": "e", "op": "upsert",
            "before": orjson.dumps({"flags": {"a": ON, "n": None}}).decode(),
            "after": orjson.dumps({"flags": {"a": OFF, "n": ON}}).decode(),
            "author": "ann", "message": "a off, n new", "at": "1765000000.1", **extra}


def test_a_direct_change_carries_diff_and_its_estimated_impact():
    fields = change_fields()
    impact = messages.change_impact(fields, {}, {})
    msg = messages.build("prod", ENTRY_ID, fields, impact=impact)
    assert msg["type"] == "change.applied"
    assert msg["timestamp"] == "2025-12-06T05:46:40.000Z"
    data = msg["data"]
    assert (data["env"], data["version"], data["author"], data["message"]) == (
        "prod", 7, "ann", "a off, n new")
    assert data["diff"]["added"] == ["n"] and list(data["diff"]["changed"]) == ["a"]
    assert {i["flag"]: i["share"] for i in data["impact"]} == {"a": 1.0, "n": 1.0}
    assert data["approvers"] == [] and data["request"] is None and not data["kill"]
    assert "url" not in data


def test_an_applied_request_names_its_approvers_marks_and_links_when_ui_url_is_set():
    fields = change_fields(request="4", approvers='["bob","carl"]', break_glass="1")
    msg = messages.build("prod", ENTRY_ID, fields, impact=[], ui_url="https://flags.example/")
    data = msg["data"]
    assert data["approvers"] == ["bob", "carl"] and data["request"] == 4
    assert data["break_glass"] is True
    assert data["url"] == "https://flags.example/ui/envs/prod/history?version=7"


def request_body(state: str = "open", **extra) -> str:
    req = Request(id=3, state=state, base_version=6, author="ann", message="m",
                  created_at=1.0, expires_at=2.0, change={"before": {}, "after": {}},
                  content_hash="sha256:x",
                  preview={"version": 6, "diff": {"changed": {"a": []}},
                           "impact": [{"flag": "a", "share": 0.5}]}, **extra)
    return req.dumps().decode()


def test_a_request_event_carries_the_request_and_who_acted():
    fields = {"type": "request", "event": "rejected", "request": "3", "by": "dan",
              "body": request_body("rejected", reason="rejected by dan: no")}
    msg = messages.build("prod", ENTRY_ID, fields, ui_url="https://f.example")
    data = msg["data"]
    assert msg["type"] == "request.rejected"
    assert (data["request"], data["state"], data["by"], data["author"]) == (
        3, "rejected", "dan", "ann")
    assert data["impact"] == [{"flag": "a", "share": 0.5}] and data["version"] == 6
    assert data["reason"] == "rejected by dan: no"
    assert data["url"] == "https://f.example/ui/envs/prod/requests/3"


def test_the_message_id_is_stable_per_environment_and_entry():
    assert messages.message_id("prod", ENTRY_ID) == messages.message_id("prod", ENTRY_ID)
    assert messages.message_id("prod", ENTRY_ID) != messages.message_id("dev", ENTRY_ID)


def test_slack_format_is_one_line_of_text():
    msg = messages.build("prod", ENTRY_ID, change_fields(kill="1"), impact=[])
    body = orjson.loads(messages.body(msg, "slack"))
    assert set(body) == {"text"}
    assert body["text"].startswith("*prod* v7 by ann [kill]: a off, n new")
    assert "added n" in body["text"] and "changed a" in body["text"]
    assert orjson.loads(messages.body(msg, "json")) == msg
