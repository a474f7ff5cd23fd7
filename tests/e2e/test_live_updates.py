"""The demo page in headless Chromium: live updates without a reload.

The provider fetches all flags in one bulk POST, then follows the ``eventStreams`` SSE URL of
the response; a rule pushed to Redis must reach the DOM through that stream, across proxy
restarts, refused reconnects, another origin and a hidden tab. Every wait is on the DOM, the
page's own state or the proxy's metrics, with a deadline.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.pageutil import (
    PROPAGATION_DEADLINE_S,
    RESTART_DEADLINE_S,
    ROLES,
    SET_VISIBILITY,
    assert_page_matches_proxy,
    bulk_requests,
    event_stream_urls,
    flags_doc,
    is_sse_refetch,
    open_sse_connections,
    shown,
    wait_ready,
    wait_shown,
)
from tests.integration.streams_support import state_id_in_redis
from tests.redis_server import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]


def test_kill_switch_push_reaches_the_page_over_sse_within_2s(stack: Stack,
                                                              open_page: Any) -> None:
    user = "user-1"
    page = open_page(stack.demo_url(user), "kill-switch")
    wait_ready(page)
    assert page.get_by_test_id("incident-banner").is_hidden()
    page.evaluate("() => { window.__sameDocument = 'yes'; }")
    changes_before = page.evaluate("() => window.flagedgeDemo.changes")
    bulks_before = len(bulk_requests(page))

    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    version = stack.proxy.push(doc, env=stack.env, wait=False)
    written = time.monotonic()
    page.get_by_test_id("incident-banner").wait_for(
        state="visible", timeout=PROPAGATION_DEADLINE_S * 1000)
    elapsed = time.monotonic() - written
    stack.extra["propagation_s"] = elapsed
    print(f"kill switch: Redis write -> banner visible in {elapsed * 1000:.0f} ms")

    assert page.get_by_test_id("pay-button").is_disabled()
    assert shown(page)["payments"]["value"] == "false"
    # Same document (no reload), one CONFIGURATION_CHANGED naming the flag.
    assert page.evaluate("() => window.__sameDocument") == "yes"
    assert page.evaluate("() => window.flagedgeDemo.changes") == changes_before + 1
    assert ROLES["payments"] in page.evaluate("() => window.flagedgeDemo.lastChanged")
    # The re-fetch was triggered by the SSE notification: it names the new state (OFREP
    # ADR-0008 flagConfigEtag = the notification's etag, the state id "VERSION-TAG" of the
    # push), which only the stream could have told the page.
    refetches = bulk_requests(page)[bulks_before:]
    assert refetches, "no bulk re-fetch after the push"
    wanted = state_id_in_redis(stack.proxy.redis_client, stack.env, version)
    assert refetches[-1].get("flagConfigEtag") == [wanted], refetches
    assert_page_matches_proxy(stack, page, user)


def test_the_page_survives_a_proxy_restart(stack: Stack, open_page: Any) -> None:
    user = "user-1"
    # Logged in, so the banner shows the default text that the push below changes.
    page = open_page(stack.demo_url(user, **{"ctx.loggedIn": "yes"}), "restart")
    wait_ready(page)
    page.evaluate("() => { window.__sameDocument = 'yes'; }")
    streams_before = len(event_stream_urls(page))

    stack.proxy.restart(wait="readyz")

    # Pushed once the new process is up. The browser's EventSource reconnects by itself to
    # the same signed URL (the token is signed with Redis's shared secret, so the new process
    # accepts it); whether the change arrives as a live event or as the Last-Event-ID resume
    # of that reconnect, it must reach the page without a reload.
    doc = flags_doc()
    doc["flags"][ROLES["greeting"]]["variants"]["default"] = "Welcome back after the restart"
    stack.proxy.push(doc, env=stack.env, wait=False)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=greeting-banner]').textContent"
        " === 'Welcome back after the restart'", timeout=RESTART_DEADLINE_S * 1000)
    assert page.evaluate("() => window.__sameDocument") == "yes"
    assert len(event_stream_urls(page)) > streams_before, "no SSE reconnect was made"
    assert_page_matches_proxy(stack, page, user, loggedIn="yes")
    # Not asserted (client behaviour, see examples/web/src/main.js): the SDK status stays
    # STALE after the reconnect because the provider never emits READY again.
    print("provider status after the restart:", page.evaluate("() => window.flagedgeDemo.status"))


def test_a_change_made_while_the_proxy_is_down_arrives_after_it_returns(
        stack: Stack, open_page: Any) -> None:
    user = "user-1"
    page = open_page(stack.demo_url(user), "down-push")
    wait_ready(page)
    page.evaluate("() => { window.__sameDocument = 'yes'; }")

    stack.proxy.stop()
    doc = flags_doc()
    doc["flags"][ROLES["shipping"]]["defaultVariant"] = "high"
    stack.proxy.push(doc, env=stack.env, wait=False)  # straight to Redis: no proxy is up
    stack.proxy.start(wait="readyz")

    # Nobody pushes again: the page learns of the change only through its reconnect
    # (Last-Event-ID resume on the stream, or the provider's re-fetch after an SSE error).
    wait_shown(page, "() => document.querySelector('[data-testid=shipping-threshold]')"
               ".textContent === '75.5'", RESTART_DEADLINE_S,
               "the change made while the proxy was down")
    assert page.evaluate("() => window.__sameDocument") == "yes"
    assert_page_matches_proxy(stack, page, user)


def test_a_stream_refused_on_reconnect_still_brings_the_change(stack: Stack,
                                                              open_page: Any) -> None:
    """The restarted proxy signs stream tokens with another secret, so the browser's
    automatic reconnect to the old SSE URL gets a 401 and EventSource gives up. The provider
    then re-fetches (picking up a change made meanwhile) and opens the new URL itself."""
    user = "user-1"
    page = open_page(stack.demo_url(user), "refused")
    wait_ready(page)
    page.evaluate("() => { window.__sameDocument = 'yes'; }")
    old_streams = set(event_stream_urls(page))

    stack.proxy.stop()
    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env, wait=False)
    stack.proxy.extra_args = ["--demo", "--stream-secret", "a-rotated-secret"]
    stack.proxy.start(wait="readyz")

    page.get_by_test_id("incident-banner").wait_for(state="visible",
                                                    timeout=RESTART_DEADLINE_S * 1000)
    assert page.evaluate("() => window.__sameDocument") == "yes"
    assert "warning: SSE connection closed permanently" in page.flagedge_console
    assert set(event_stream_urls(page)) - old_streams, "the provider never opened the new URL"
    assert_page_matches_proxy(stack, page, user)
    # The page showed it through its cache re-read (examples/web/src/main.js): provider
    # 0.4.3 emits no CONFIGURATION_CHANGED for a re-fetch made on its SSE-retry path.
    print("refused reconnect: changes", page.evaluate("() => window.flagedgeDemo.changes"),
          "cache re-reads", page.evaluate("() => window.flagedgeDemo.cacheRefreshes"))

    # And the new stream is live: the next push arrives as an ordinary change.
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "on"
    stack.proxy.push(doc, env=stack.env, wait=False)
    page.get_by_test_id("incident-banner").wait_for(state="hidden",
                                                    timeout=PROPAGATION_DEADLINE_S * 1000)


def test_a_proxy_restarted_during_a_redis_outage_catches_the_page_up(stack: Stack,
                                                                    open_page: Any) -> None:
    """The new process cannot check keys or stream tokens until Redis is back (401s), so the
    browser gives the stream up and the provider retries with backoff (1 s, 2 s, 4 s ...)."""
    user = "user-1"
    page = open_page(stack.demo_url(user), "redis-outage")
    wait_ready(page)
    page.evaluate("() => { window.__sameDocument = 'yes'; }")

    stack.proxy.stop()
    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env, wait=False)
    stack.redis.stop()
    with page.expect_console_message(lambda m: "SSE connection closed permanently" in m.text,
                                     timeout=RESTART_DEADLINE_S * 1000):
        stack.proxy.start(wait="healthz")  # up, but without Redis: no rules, keys or secret
    # The page keeps showing the last values it had while the proxy cannot serve.
    assert page.get_by_test_id("incident-banner").is_hidden()

    stack.redis.start()
    page.get_by_test_id("incident-banner").wait_for(state="visible",
                                                    timeout=RESTART_DEADLINE_S * 1000)
    assert page.evaluate("() => window.__sameDocument") == "yes"
    assert_page_matches_proxy(stack, page, user)


def test_a_page_on_another_origin_uses_cors(stack: Stack, open_page: Any) -> None:
    # localhost and 127.0.0.1 are different origins: the page is served from one and calls
    # the proxy on the other, so the bulk POST (Authorization header) needs a preflight, the
    # ETag must be exposed for If-None-Match, and the EventSource is a CORS request too.
    page_origin = f"http://localhost:{stack.proxy.port}"
    stack.proxy.restart(extra_args=["--demo", "--cors-origins", page_origin], wait="readyz")
    user = "user-1"
    url = stack.demo_url(user, baseUrl=stack.proxy.url).replace(stack.proxy.url, page_origin, 1)
    page = open_page(url, "cross-origin")
    wait_ready(page)
    assert urlsplit(page.url).netloc == f"localhost:{stack.proxy.port}"
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in event_stream_urls(page))
    assert_page_matches_proxy(stack, page, user)

    # A push that does not change this user's values: the SSE-triggered re-fetch carries the
    # exposed ETag in If-None-Match and gets a 304.
    doc = flags_doc()
    doc["flags"][ROLES["greeting"]]["variants"]["holiday"] = "Happy new year!"  # not user-1's
    with page.expect_response(is_sse_refetch, timeout=PROPAGATION_DEADLINE_S * 1000) as resp:
        stack.proxy.push(doc, env=stack.env, wait=False)
    assert resp.value.status == 304
    assert resp.value.request.header_value("if-none-match")
    assert page.evaluate("() => window.flagedgeDemo.changes") == 0

    # A push that does change them arrives cross-origin through the same stream.
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env, wait=False)
    page.get_by_test_id("incident-banner").wait_for(
        state="visible", timeout=PROPAGATION_DEADLINE_S * 1000)


def test_a_hidden_tab_drops_its_stream_and_catches_up_when_shown(stack: Stack,
                                                                 open_page: Any) -> None:
    # inactivityDelaySec comes from the proxy (eventStreams); 1 s keeps the test short.
    stack.proxy.environ["FLAGEDGE_INACTIVITY_DELAY"] = "1"
    stack.proxy.restart(wait="readyz")
    assert stack.bulk({})["eventStreams"][0]["inactivityDelaySec"] == 1
    user = "user-1"
    page = open_page(stack.demo_url(user), "hidden-tab")
    wait_ready(page)
    wait_until(lambda: open_sse_connections(stack) == 1, timeout=5, what="the page's stream")

    page.evaluate(SET_VISIBILITY, "hidden")
    # After inactivityDelaySec hidden, the provider closes its stream; the proxy sees it go.
    wait_until(lambda: open_sse_connections(stack) == 0, timeout=10, what="the stream to close")
    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env)  # waits until the proxy serves it
    # Nothing can have told the hidden page (it has no stream).
    assert page.get_by_test_id("incident-banner").is_hidden()

    with page.expect_request(lambda r: urlsplit(r.url).path == "/ofrep/v1/evaluate/flags",
                             timeout=PROPAGATION_DEADLINE_S * 1000) as refetch:
        page.evaluate(SET_VISIBILITY, "visible")
    page.get_by_test_id("incident-banner").wait_for(
        state="visible", timeout=PROPAGATION_DEADLINE_S * 1000)
    wait_until(lambda: open_sse_connections(stack) == 1, timeout=5, what="the stream to reopen")
    # ADR-0008: the resume re-fetch is unconditional.
    assert refetch.value.header_value("if-none-match") is None
    assert "flagConfigEtag" not in parse_qs(urlsplit(refetch.value.url).query)


def test_a_reload_starts_from_the_cache_and_stays_live(stack: Stack, open_page: Any) -> None:
    user = "user-1"
    page = open_page(stack.demo_url(user), "reload")
    wait_ready(page)
    before = shown(page)
    with page.expect_response(
            lambda r: urlsplit(r.url).path == "/ofrep/v1/evaluate/flags") as revalidation:
        page.reload()  # the key is gone from the URL; the tab kept it
        wait_ready(page)
    # The provider's default cacheMode starts from localStorage (reason CACHED) and revalidates
    # in the background with If-None-Match: nothing changed, so a 304.
    after = shown(page)
    assert {r: (v["value"], v["variant"]) for r, v in after.items()} == {
        r: (v["value"], v["variant"]) for r, v in before.items()}
    assert {v["reason"] for v in after.values()} == {"CACHED"}
    assert revalidation.value.status == 304
    assert "key=" not in page.url

    # It follows the stream URL it had persisted: a push still arrives live.
    doc = flags_doc()
    doc["flags"][ROLES["payments"]]["defaultVariant"] = "off"
    stack.proxy.push(doc, env=stack.env, wait=False)
    page.get_by_test_id("incident-banner").wait_for(
        state="visible", timeout=PROPAGATION_DEADLINE_S * 1000)
    assert_page_matches_proxy(stack, page, user)
