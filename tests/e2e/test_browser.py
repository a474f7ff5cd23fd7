"""The demo page in headless Chromium against a real proxy and Redis.

The page is the OpenFeature web SDK with ``@openfeature/ofrep-web-provider`` (examples/web).
It fetches all flags in one bulk POST, then follows the ``eventStreams`` SSE URL of the
response; a rule pushed to Redis must reach the DOM through that stream without a reload.
Every wait is on the DOM (or the page's own state) with a deadline.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from tests.e2e.conftest import FLAGS_FILE, Stack
from tests.redis_server import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

# The page's roles and the flags of config/flags.json behind them (examples/web/src/main.js).
ROLES = {
    "payments": "payments-kill-switch",
    "experiment": "search-ranking",
    "greeting": "welcome-banner",
    "shipping": "free-shipping-threshold",
}
ARM_COLOURS = {"control": "slategray", "semantic": "royalblue", "hybrid": "mediumpurple"}
PROPAGATION_DEADLINE_S = 2.0
# Reconnect after a restart: Chromium's EventSource retry delay, or the provider's own
# backoff (1 s, 2 s, 4 s ...) when the browser gave the stream up while the port was closed.
RESTART_DEADLINE_S = 20.0


def flags_doc() -> dict[str, Any]:
    return orjson.loads(Path(FLAGS_FILE).read_bytes())


def js_string(value: Any) -> str:
    """How the page prints a flag value (JavaScript's String(), JSON for objects)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def wait_ready(page: Any, timeout_ms: int = 10_000) -> None:
    page.wait_for_function(
        "() => window.flagedgeDemo && window.flagedgeDemo.status === 'READY'"
        " && window.flagedgeDemo.renders > 0", timeout=timeout_ms)


def shown(page: Any) -> dict[str, dict[str, str]]:
    """role -> {key, value, variant, reason} as rendered in the flag table."""
    return page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('tr[data-testid^="flag-"]')].map(tr => [
            tr.dataset.testid.slice(5),
            {key: tr.dataset.flagKey, value: tr.dataset.value, variant: tr.dataset.variant,
             reason: tr.dataset.reason}]))""")


def bucket_of(user: str, flag: str = ROLES["experiment"]) -> str | None:
    """The experiment arm the engine gives ``user`` (the same code the proxy runs)."""
    from proxy.evaluation.compiler import compile_document, load_document
    from proxy.evaluation.engine import evaluate

    flag_set = compile_document(load_document(Path(FLAGS_FILE).read_bytes()))
    return evaluate(flag_set, flag, {"targetingKey": user}).variant


def users_in_different_arms() -> tuple[tuple[str, str], tuple[str, str]]:
    seen: dict[str, str] = {}
    for i in range(1, 500):
        user = f"user-{i}"
        arm = bucket_of(user)
        assert arm in ARM_COLOURS, f"{user} got no experiment arm ({arm!r})"
        if seen and arm not in seen.values():
            first = next(iter(seen.items()))
            return first, (user, arm)
        seen.setdefault(user, arm)
    raise AssertionError("every user landed in the same arm")


def assert_page_matches_proxy(stack: Stack, page: Any, user: str,
                              **attributes: Any) -> dict[str, Any]:
    """The page shows exactly what the proxy answers over OFREP for the same context."""
    context = {"targetingKey": user, **attributes}
    bulk = {f["key"]: f for f in stack.bulk(context)["flags"]}
    rows = shown(page)
    assert set(rows) == set(ROLES)
    for role, key in ROLES.items():
        expected = bulk[key]
        assert rows[role]["key"] == key
        assert rows[role]["value"] == js_string(expected["value"]), (role, rows[role], expected)
        assert rows[role]["variant"] == (expected.get("variant") or ""), (role, rows[role])
        assert rows[role]["reason"] == expected["reason"], (role, rows[role], expected)
    return bulk


def bulk_requests(page: Any) -> list[dict[str, list[str]]]:
    """Query parameters of each bulk evaluation the page made (in order)."""
    return [parse_qs(urlsplit(url).query) for method, url in page.flagedge_requests
            if method == "POST" and urlsplit(url).path == "/ofrep/v1/evaluate/flags"]


def is_sse_refetch(response: Any) -> bool:
    """A bulk re-fetch triggered by an SSE notification (it names the new version)."""
    url = urlsplit(response.url)
    return url.path == "/ofrep/v1/evaluate/flags" and "flagConfigEtag" in parse_qs(url.query)


def event_stream_urls(page: Any) -> list[str]:
    return [url for method, url in page.flagedge_requests
            if method == "GET" and urlsplit(url).path == "/ofrep/v1/events"]


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
    logs = stack.proxy.logs()
    assert "/demo/" in logs and "/ofrep/v1/events" in logs
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
    # The re-fetch was triggered by the SSE notification: it names the new version
    # (OFREP ADR-0008 flagConfigEtag), which only the stream could have told the page.
    refetches = bulk_requests(page)[bulks_before:]
    assert refetches, "no bulk re-fetch after the push"
    assert refetches[-1].get("flagConfigEtag") == [str(version)], refetches
    assert_page_matches_proxy(stack, page, user)


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
    page.wait_for_function(
        "() => document.querySelector('[data-testid=shipping-threshold]').textContent"
        " === '75.5'", timeout=RESTART_DEADLINE_S * 1000)
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


def open_sse_connections(stack: Stack) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{stack.proxy.url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "flagedge_sse_connections" for sample in family.samples)


SET_VISIBILITY = """state => {
    // Headless pages are always 'visible': stand in for the tab being hidden or shown.
    window.__visibility = state;
    if (!window.__visibilityPatched) {
        Object.defineProperty(document, 'visibilityState',
                              {configurable: true, get: () => window.__visibility});
        window.__visibilityPatched = true;
    }
    document.dispatchEvent(new Event('visibilitychange'));
}"""


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
