"""What POST /v1/track accepts (shaped after OFREP's tracking proposal), and what it refuses."""

import re

import orjson
import pytest

from proxy.api.track import MAX_EVENTS, BadEvents, parse_events


def test_events_name_their_user_directly_or_through_a_context():
    body = orjson.dumps({"events": [
        {"event": "purchase", "targetingKey": "u1", "value": 19.5, "at": "2026-12-06T10:00Z"},
        {"event": "signup", "context": {"targetingKey": "u2", "plan": "pro"}}]})
    assert parse_events(body) == [("purchase", "u1", 19.5), ("signup", "u2", None)]
    assert parse_events(b'[{"event": "e", "targetingKey": "u", "value": 3}]') == [("e", "u", 3.0)]


@pytest.mark.parametrize(("body", "where"), [
    (b"[]", "non-empty array"),
    (b'{"event": "x"}', "$.events: expected"),
    (b'[{"targetingKey": "u"}]', "$[0].event"),
    (b'[{"event": "e"}]', "$[0]: a targetingKey"),
    (b'[{"event": "e", "context": {"targetingKey": ""}}]', "$[0]: a targetingKey"),
    (b'[{"event": "e", "targetingKey": "u", "value": "3"}]', "$[0].value"),
    (b'[{"event": "e", "targetingKey": "u", "value": true}]', "$[0].value"),
])
def test_bad_events_name_the_first_problem(body, where):
    with pytest.raises(BadEvents, match=re.escape(where)):
        parse_events(body)


def test_a_batch_is_bounded():
    too_many = orjson.dumps([{"event": "e", "targetingKey": "u"}] * (MAX_EVENTS + 1))
    with pytest.raises(BadEvents, match="at most"):
        parse_events(too_many)
