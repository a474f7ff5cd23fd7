"""Helpers for the browser tests: what the demo page shows, what it requested, and what the
proxy answers for the same context."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from tests.e2e.conftest import FLAGS_FILE, Stack

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


def wait_shown(page: Any, condition: str, timeout_s: float, what: str) -> None:
    """Wait for the JavaScript ``condition`` on the page; on a timeout, fail with what the
    page went through (console, requests with their statuses, its own state), so a failure
    in CI says which way the page went rather than only that it did not arrive."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        raise AssertionError(f"{what}: not shown within {timeout_s:g} s\n"
                             + page_story(page)) from None


def page_story(page: Any, last: int = 60) -> str:
    state = page.evaluate("""() => { const s = window.flagedgeDemo || {};
        return {status: s.status, changes: s.changes, cacheRefreshes: s.cacheRefreshes,
                renders: s.renders, values: s.values}; }""")
    lines = page.flagedge_timeline[-last:]
    return f"page state: {state}\nlast {len(lines)} events:\n  " + "\n  ".join(lines)


def shown(page: Any) -> dict[str, dict[str, str]]:
    """role -> {key, value, variant, reason} as rendered in the flag table."""
    return page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('tr[data-testid^="flag-"]')].map(tr => [
            tr.dataset.testid.slice(5),
            {key: tr.dataset.flagKey, value: tr.dataset.value, variant: tr.dataset.variant,
             reason: tr.dataset.reason}]))""")


def bucket_of(user: str, flag: str = ROLES["experiment"]) -> str | None:
    """The experiment arm the engine gives ``user`` (the same code the proxy runs)."""
    from proxy.evaluation.documents import compile_document, load_document
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
