"""Rules-stream events -> the provider's in-memory rules, without any network.

Events are given exactly as httpx-sse reports them: ``(event, data, id)`` where ``id`` is the
stream's last event id, which persists across frames that carry no ``id:`` line.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.evaluation.engine import evaluate
from proxy.model import ErrorCode, Reason, state_id
from proxy.provider.rules import RulesState, StreamPayloadError


def flag(on: str = "on", targeting: Any = None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"state": "ENABLED", "variants": {"on": True, "off": False},
                           "defaultVariant": on}
    if targeting is not None:
        raw["targeting"] = targeting
    raw.update(extra)
    return raw


DOC = {
    "flags": {
        "a": flag(),
        "b": flag("off"),
        "uses-ref": flag("off", {"if": [{"$ref": "is-beta"}, "on", None]}),
    },
    "$evaluators": {"is-beta": {"==": [{"var": "tier"}, "beta"]}},
    "metadata": {"team": "core"},
}


def put(doc: dict[str, Any], version: int) -> tuple[str, str, str]:
    body = {"version": version, "epoch": "e1", "document": doc}
    return "put", orjson.dumps(body).decode(), str(version)


def patch(version: int, flags: dict[str, Any], **extra: Any) -> tuple[str, str, str]:
    return "patch", orjson.dumps({"version": version, "flags": flags, **extra}).decode(), str(
        version)


def delete(version: int, keys: list[str], event_id: str) -> tuple[str, str, str]:
    return "delete", orjson.dumps({"version": version, "flags": keys}).decode(), event_id


@pytest.fixture
def state() -> RulesState:
    s = RulesState()
    applied = s.apply(*put(DOC, 5))
    assert applied is not None and applied.first
    return s


def value(state: RulesState, key: str, ctx: dict[str, Any] | None = None) -> Any:
    assert state.flag_set is not None
    return evaluate(state.flag_set, key, ctx or {}).value


def test_first_put_loads_everything_and_sets_the_resume_id(state: RulesState) -> None:
    assert state.flag_set is not None
    assert state.flag_set.version == 5 and state.flag_set.epoch == "e1"
    assert sorted(state.flag_set.flags) == ["a", "b", "uses-ref"]
    assert state.last_event_id == "5"
    assert value(state, "a") is True
    assert value(state, "uses-ref", {"tier": "beta"}) is True
    assert evaluate(state.flag_set, "a", {}).metadata.get("team") == "core"


def test_patch_upserts_flags_and_reports_only_them(state: RulesState) -> None:
    applied = state.apply(*patch(6, {"a": flag("off"), "new": flag()}))
    assert applied is not None
    assert applied.flags_changed == ("a", "new") and applied.version == 6 and not applied.first
    assert value(state, "a") is False and value(state, "new") is True
    assert value(state, "b") is False
    assert state.last_event_id == "6"


def test_patch_with_new_evaluators_recompiles_the_flags_that_use_them(state: RulesState) -> None:
    evs = {"is-beta": {"==": [{"var": "tier"}, "gold"]}}
    applied = state.apply(*patch(6, {}, **{"$evaluators": evs}))
    assert applied is not None and applied.flags_changed == ("uses-ref",)
    assert value(state, "uses-ref", {"tier": "gold"}) is True
    assert value(state, "uses-ref", {"tier": "beta"}) is False


def test_patch_with_new_metadata_changes_every_flag(state: RulesState) -> None:
    applied = state.apply(*patch(6, {}, metadata={"team": "growth"}))
    assert applied is not None and applied.flags_changed == ("a", "b", "uses-ref")
    assert state.flag_set is not None
    assert evaluate(state.flag_set, "b", {}).metadata.get("team") == "growth"


def test_delete_with_its_own_id_is_a_whole_version(state: RulesState) -> None:
    applied = state.apply(*delete(6, ["b"], "6"))
    assert applied is not None and applied.flags_changed == ("b",)
    assert state.flag_set is not None and "b" not in state.flag_set.flags
    assert state.flag_set.version == 6 and state.last_event_id == "6"
    assert evaluate(state.flag_set, "b", {}).error_code == "FLAG_NOT_FOUND"


def test_delete_then_patch_of_one_version_is_announced_once(state: RulesState) -> None:
    # The server sends the delete without an id line, so the parser still reports "5".
    assert state.apply(*delete(6, ["b"], "5")) is None
    assert state.flag_set is not None and "b" not in state.flag_set.flags
    assert state.last_event_id == "5"  # a cut here resumes from 5 and replays both halves
    applied = state.apply(*patch(6, {"a": flag("off")}))
    assert applied is not None and applied.flags_changed == ("a", "b")
    assert state.flag_set.version == 6 if state.flag_set else False
    assert state.last_event_id == "6"


def test_replayed_versions_are_ignored(state: RulesState) -> None:
    assert state.apply(*patch(6, {"a": flag("off")})) is not None
    assert state.apply(*patch(6, {"a": flag("on")})) is None
    assert state.apply(*patch(4, {"a": flag("on")})) is None
    assert value(state, "a") is False


def test_a_later_put_reports_the_difference(state: RulesState) -> None:
    doc = {"flags": {"a": flag(), "uses-ref": DOC["flags"]["uses-ref"], "c": flag()},
           "$evaluators": {"is-beta": {"==": [{"var": "tier"}, "x"]}},
           "metadata": {"team": "core"}}
    applied = state.apply(*put(doc, 9))
    assert applied is not None and not applied.first
    # b removed, c added, uses-ref's evaluator changed; a is the same.
    assert applied.flags_changed == ("b", "c", "uses-ref")
    assert state.last_event_id == "9"


def test_a_put_may_go_back_in_version(state: RulesState) -> None:
    """A fresh put is authoritative even with a lower version (a new epoch after data loss)."""
    applied = state.apply(*put({"flags": {"a": flag("off")}}, 1))
    assert applied is not None and state.flag_set is not None
    assert state.flag_set.version == 1 and value(state, "a") is False


def test_id_only_frame_moves_the_resume_point(state: RulesState) -> None:
    assert state.apply("message", "", "7") is None
    assert state.last_event_id == "7"
    assert state.apply("message", "", None) is None and state.last_event_id == "7"


def test_unknown_event_types_are_ignored(state: RulesState) -> None:
    before = state.flag_set
    assert state.apply("ping", '{"x": 1}', "5") is None
    assert state.flag_set is before


@pytest.mark.parametrize("event", [
    ("patch", "not json", "6"),
    ("patch", "[1, 2]", "6"),
    ("patch", '{"flags": {"a": true}}', "x"),  # no version anywhere
    ("delete", '{"version": 6, "flags": "a"}', "6"),
    ("put", '{"version": 6, "document": {"flags": 3}}', "6"),  # no flag document
])
def test_bad_events_raise_and_change_nothing(state: RulesState, event: tuple[str, str, str]
                                             ) -> None:
    before, before_id = state.flag_set, state.last_event_id
    with pytest.raises(StreamPayloadError):
        state.apply(*event)
    assert state.flag_set is before and state.last_event_id == before_id


@pytest.mark.parametrize("event", [
    ("patch", '{"version": 6, "flags": {"a": {"state": "ENABLED"}}}', "6"),
    ("put", '{"version": 6, "document": {"flags": {"a": {"variants": 3}, "ok": '
            '{"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}}', "6"),
])
def test_invalid_flags_are_served_as_their_error_like_the_server_does(
        state: RulesState, event: tuple[str, str, str]) -> None:
    # flagedge serves a flag it holds but cannot compile as its error (issue 26) and sends
    # it on: the provider must not refuse the whole update for it
    state.apply(*event)
    assert state.flag_set is not None and state.flag_set.version == 6
    assert evaluate(state.flag_set, "a", {}).error_code is ErrorCode.PARSE_ERROR
    if event[0] == "put":
        assert evaluate(state.flag_set, "ok", {}).value is True


def test_patch_before_put_is_an_error() -> None:
    with pytest.raises(StreamPayloadError):
        RulesState().apply(*patch(1, {"a": flag()}))


def test_disabled_and_targeted_flags_after_patch(state: RulesState) -> None:
    state.apply(*patch(6, {"a": {**flag(), "state": "DISABLED"},
                           "b": flag("off", {"if": [{"==": [{"var": "targetingKey"}, "u1"]},
                                                    "on", None]})}))
    assert state.flag_set is not None
    assert evaluate(state.flag_set, "a", {}).reason == Reason.DISABLED
    hit = evaluate(state.flag_set, "b", {"targetingKey": "u1"})
    assert (hit.value, hit.reason) == (True, Reason.TARGETING_MATCH)
    miss = evaluate(state.flag_set, "b", {"targetingKey": "u2"})
    assert (miss.value, miss.reason) == (False, Reason.DEFAULT)


# -- a server that sends state ids (VERSION-TAG) ----------------------------------------------
def sid(version: int, epoch: str = "e1") -> str:
    return state_id(version, epoch, f"{1_700_000_000_000 + version}-0")


def test_state_ids_decode_and_a_delete_then_patch_completes_only_at_the_patch() -> None:
    state = RulesState()
    first = state.apply("put", orjson.dumps({"version": 5, "epoch": "e1", "document": DOC})
                        .decode(), sid(5))
    assert first is not None and first.version == 5 and state.last_event_id == sid(5)
    # version 6 deletes b and changes a: its delete comes without an id line, so the parser
    # still reports version 5's id; the version is complete only at its patch.
    assert state.apply(*delete(6, ["b"], sid(5))) is None
    assert state.flag_set is not None and state.flag_set.version == 5
    assert "b" not in state.flag_set.flags
    assert state.last_event_id == sid(5)  # a cut here resumes from 5 and replays both halves
    body = orjson.dumps({"version": 6, "flags": {"a": flag("off")}}).decode()
    applied = state.apply("patch", body, sid(6))
    assert applied is not None and applied.version == 6
    assert applied.flags_changed == ("a", "b")
    assert state.flag_set.version == 6 and state.last_event_id == sid(6)
    assert value(state, "a") is False
    # a delete alone carries its own id: complete at once
    gone = state.apply(*delete(7, ["a"], sid(7)))
    assert gone is not None and gone.flags_changed == ("a",) and state.last_event_id == sid(7)


def test_the_version_comes_from_the_payload_else_from_the_state_id() -> None:
    state = RulesState()
    state.apply("put", orjson.dumps({"epoch": "e1", "document": DOC}).decode(), sid(5))
    assert state.flag_set is not None and state.flag_set.version == 5
    applied = state.apply("patch", orjson.dumps({"flags": {"b": flag()}}).decode(), sid(6))
    assert applied is not None and applied.version == 6 and state.flag_set.version == 6
    assert state.apply("patch", orjson.dumps({"flags": {"b": flag("off")}}).decode(),
                       sid(6)) is None  # a replay of version 6
    # the payload's version wins over the id's
    body = orjson.dumps({"version": 8, "flags": {"b": flag("off")}}).decode()
    assert state.apply("patch", body, sid(8)) is not None and state.flag_set.version == 8
    with pytest.raises(StreamPayloadError):  # neither says which version
        state.apply("patch", orjson.dumps({"flags": {}}).decode(), "x-9")


def test_a_put_of_a_lower_version_of_a_new_epoch_replaces_the_rules() -> None:
    """Redis lost its data and was re-published: versions start again at 1 in epoch e2."""
    state = RulesState()
    state.apply("put", orjson.dumps({"version": 5, "epoch": "e1", "document": DOC}).decode(),
                sid(5))
    state.apply(*patch(6, {"a": flag("off")})[:2], sid(6))
    doc = {"flags": {"c": flag(), "b": flag("on")}}
    applied = state.apply("put", orjson.dumps({"version": 1, "epoch": "e2", "document": doc})
                          .decode(), sid(1, "e2"))
    assert applied is not None and not applied.first
    assert applied.version == 1 and applied.flags_changed == ("a", "b", "c", "uses-ref")
    assert state.flag_set is not None
    assert (state.flag_set.version, state.flag_set.epoch) == (1, "e2")
    assert sorted(state.flag_set.flags) == ["b", "c"]
    assert state.last_event_id == sid(1, "e2")
    # the new epoch's next versions apply (they are below 6, but not replays)
    nxt = state.apply("patch", orjson.dumps({"version": 2, "flags": {"c": flag("off")}})
                      .decode(), sid(2, "e2"))
    assert nxt is not None and nxt.flags_changed == ("c",) and state.flag_set.version == 2
    assert value(state, "c") is False and state.last_event_id == sid(2, "e2")


def test_a_put_of_the_same_version_of_another_write_replaces_the_rules() -> None:
    """After a failover, the server sends its version 5 (another write) as a put."""
    state = RulesState()
    state.apply("put", orjson.dumps({"version": 5, "epoch": "e1", "document": DOC}).decode(),
                sid(5))
    other = state_id(5, "e1", "1700000009999-0")
    doc = {**DOC, "flags": {**DOC["flags"], "a": flag("off")}}
    applied = state.apply("put", orjson.dumps({"version": 5, "epoch": "e1", "document": doc})
                          .decode(), other)
    assert applied is not None and applied.flags_changed == ("a",)
    assert value(state, "a") is False and state.last_event_id == other
