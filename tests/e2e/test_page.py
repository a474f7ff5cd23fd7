"""The demo page in headless Chromium against a real proxy and Redis: what it shows.

The page is the OpenFeature web SDK with ``@openfeature/ofrep-web-provider`` (examples/web);
it must show exactly what the proxy answers over OFREP for the same context.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.pageutil import (
    ARM_COLOURS,
    PROPAGATION_DEADLINE_S,
    ROLES,
    assert_page_matches_proxy,
    event_stream_urls,
    flags_doc,
    is_sse_refetch,
    js_string,
    shown,
    users_in_different_arms,
    wait_ready,
)
from tests.redis_server import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]


def test_page_shows_the_evaluated_flags(stack: Stack, open_page: Any) -> None:
    user = "user-1"
    page = open_page(stack.demo_url(user), "user-1")
    wait_ready(page)
    bulk = assert_page_matches_proxy(stack, page, user)

    # The page's widgets follow the flags.
    payments_on = bulk[ROLES["payments"]]["value"] is True
    assert page.get_by_test_id("incident-banner").is_hidden() == payments_on
    assert page.get_by_test_id("pay-button").is_enabled() == payments_on
    arm = bulk[ROLES["experiment"]]["variant"]
    assert page.get_by_test_id("pay-button").get_attribute("data-color") == ARM_COLOURS[arm]
    assert page.get_by_test_id("experiment-arm").inner_text() == arm
    greeting = bulk[ROLES["greeting"]]["value"]
    assert page.get_by_test_id("greeting-banner").is_visible() == bool(greeting)
    assert page.get_by_test_id("shipping-threshold").inner_text() == js_string(
        bulk[ROLES["shipping"]]["value"])
    assert page.get_by_test_id("user").inner_text() == user
    # The key does not stay in the address bar, and the page found the SSE URL.
    assert "key=" not in page.url
    assert event_stream_urls(page), "the provider never opened the eventStreams URL"
    assert all("key=" not in url for url in event_stream_urls(page))
    # The key rode in the page URL and the token in the stream URL: neither reaches the log.
    # (the access log is written by a background thread every 0.2 s: wait for its lines)
    wait_until(lambda: all(p in stack.proxy.logs() for p in ("/demo/", "/ofrep/v1/events")),
               timeout=10, what="the page's requests in the access log")
    logs = stack.proxy.logs()
    assert stack.key not in logs
    token = parse_qs(urlsplit(event_stream_urls(page)[0]).query)["token"][0]
    assert token not in logs


def test_context_attributes_from_the_query_reach_targeting(stack: Stack, open_page: Any) -> None:
    page = open_page(stack.demo_url("user-7", **{"ctx.country": "DE", "ctx.locale": "en-GB"}),
                     "germany")
    wait_ready(page)
    assert_page_matches_proxy(stack, page, "user-7", country="DE", locale="en-GB")
    rows = shown(page)
    assert rows["shipping"]["value"] == "25" and rows["shipping"]["variant"] == "low"
    assert rows["greeting"]["variant"] == "holiday"
    assert page.get_by_test_id("greeting-banner").inner_text() == "Happy holidays!"


def test_a_second_user_sees_their_own_bucket(stack: Stack, open_page: Any) -> None:
    (user_a, arm_a), (user_b, arm_b) = users_in_different_arms()
    assert arm_a != arm_b
    page_a = open_page(stack.demo_url(user_a), f"{user_a}-{arm_a}")
    page_b = open_page(stack.demo_url(user_b), f"{user_b}-{arm_b}")
    wait_ready(page_a)
    wait_ready(page_b)
    for page, user, arm in ((page_a, user_a, arm_a), (page_b, user_b, arm_b)):
        assert page.get_by_test_id("experiment-arm").inner_text() == arm
        assert page.get_by_test_id("pay-button").get_attribute("data-color") == ARM_COLOURS[arm]
        assert_page_matches_proxy(stack, page, user)

    # A push that moves only user B's arm changes user B's page, and user A's not at all.
    doc = flags_doc()
    experiment = doc["flags"][ROLES["experiment"]]
    new_arm = next(a for a in ARM_COLOURS if a not in (arm_a, arm_b))
    experiment["targeting"] = {"if": [{"==": [{"var": "targetingKey"}, user_b]}, new_arm,
                                      copy.deepcopy(experiment["targeting"])]}
    # A's provider re-fetches too (the notification is per environment) with If-None-Match;
    # its results did not change, so the context-correct ETag gives a 304 and A sees nothing.
    with page_a.expect_response(is_sse_refetch, timeout=PROPAGATION_DEADLINE_S * 1000) as a_resp:
        stack.proxy.push(doc, env=stack.env, wait=False)
        page_b.wait_for_function(
            "arm => document.querySelector('[data-testid=experiment-arm]').textContent === arm",
            arg=new_arm, timeout=PROPAGATION_DEADLINE_S * 1000)
    assert page_b.get_by_test_id("pay-button").get_attribute("data-color") == ARM_COLOURS[new_arm]
    assert a_resp.value.status == 304
    assert page_a.get_by_test_id("experiment-arm").inner_text() == arm_a
    assert page_a.evaluate("() => window.flagedgeDemo.changes") == 0
    assert page_b.evaluate("() => window.flagedgeDemo.changes") == 1


def test_a_wrong_key_shows_an_error_not_values(stack: Stack, open_page: Any) -> None:
    page = open_page(stack.demo_url("user-1").replace(f"key={stack.key}", "key=fe_client_bogus"),
                     "bad-key")
    page.wait_for_function("() => window.flagedgeDemo && window.flagedgeDemo.renders > 0")
    # A 401 at start-up is fatal for the provider (no retry with a bad key).
    assert page.evaluate("() => window.flagedgeDemo.status") == "FATAL"
    # Nothing evaluated: every role shows the code default with an error reason.
    rows = shown(page)
    assert all(r["reason"].startswith("ERROR") for r in rows.values()), rows
    assert not event_stream_urls(page)


def test_without_auth_the_page_needs_no_key(stack: Stack, open_page: Any) -> None:
    # `serve --no-auth` (local use): the page sends no Authorization header at all.
    stack.proxy.restart(extra_args=["--demo", "--no-auth"], wait="readyz")
    user = "user-1"
    page = open_page(f"{stack.proxy.url}/demo/?user={user}", "no-auth")
    wait_ready(page)
    assert page.evaluate(
        "() => JSON.parse(document.getElementById('flagedge-config').textContent)"
    ) == {"env": stack.env, "authRequired": False}
    assert_page_matches_proxy(stack, page, user)
    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env, wait=False)
    page.get_by_test_id("incident-banner").wait_for(
        state="visible", timeout=PROPAGATION_DEADLINE_S * 1000)
