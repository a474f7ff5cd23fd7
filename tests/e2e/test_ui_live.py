"""The UI's live channel (DESIGN §12, issue 25: "a change, an approval or a count made anywhere
appears without a reload"), against one real redis-server and two real `flagedge serve`:

- Chromium signed in on replica a sees a flag's new state (flags list) and the new version
  (environment page) written through replica b's admin API, and a change request created on
  b (the environment page's open-requests count), without the page navigating (a marker set
  on ``window`` survives) and with the search box keeping its focus and value;
- a write made after the page was rendered but before its stream opened shows all the same
  (the stream's first event, ``opened``), and a change made while a reload is out shows
  once that reload ends (the region's queued reload runs: it swaps its content, not itself);
- over HTTP (httpx-sse): the stream says ``changed`` after a write and after insight counts
  are flushed; a session signed out on
  the other replica gets no more events (its stream ends, a new one is 401); a stream ends
  promptly when its serve shuts down.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.ui.live import KINDS
from tests.e2e.test_ui import new_page, sign_in
from tests.e2e.ui_support import HeldReload, admin_keys, replicas
from tests.integration.conftest import ProxyServer
from tests.integration.streams_support import Stream, data
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV = "ui"  # the environment tests.e2e.test_ui's helpers sign in to
BASE = f"/v1/admin/envs/{ENV}"
ALL_ROLES = ("view", "propose", "approve", "kill", "manage")


@dataclass
class LiveStack:
    redis: RedisServer
    a: ProxyServer
    b: ProxyServer
    view_key: str  # ann: roles view (the pages)
    admin_key: str  # root: every role (the writes, through b's admin API)
    workdir: Path

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.a).url}{path}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[LiveStack]:
    workdir = tmp_path_factory.mktemp("ui-live")
    # a and b flush no insight counts: a page's only events are the writes a test makes (and
    # its stream's first), never a count moved by the set-up's probes.
    with replicas(workdir, ENV, environ={"FLAGEDGE_INSIGHTS_FLUSH": "0"}) as (redis, (a, b)):
        made = admin_keys([a, b], ENV, {"ann": ("view",), "root": ALL_ROLES})
        yield LiveStack(redis, a, b, made["ann"], made["root"], workdir)


def document(stack: LiveStack) -> dict[str, Any]:
    with stack.b.client(stack.admin_key) as c:
        answer = c.get(f"{BASE}/document")
        assert answer.status_code == 200, answer.text
        return answer.json()


def put_document(stack: LiveStack, doc: dict[str, Any]) -> int:
    """A write through replica b's admin API; the new version."""
    with stack.b.client(stack.admin_key) as c:
        answer = c.put(f"{BASE}/document", json={"document": doc, "message": "live test"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["version"])


def with_state(doc: dict[str, Any], flag: str, state: str) -> dict[str, Any]:
    flags = dict(doc["flags"])
    flags[flag] = {**flags[flag], "state": state}
    return {**doc, "flags": flags}


def open_live_page(page: Any, url: str) -> str:
    """Go to ``url`` and wait until its live stream is accepted (the server holds its listener
    before it answers), then mark the page: a reload or navigation would lose the marker.
    The page as it was rendered is returned."""
    with page.expect_response(lambda r: r.url.endswith("/ui/events")) as opened:
        rendered = page.goto(url).text()
    assert opened.value.status == 200
    page.evaluate("() => { window.__marker = 1 }")
    return rendered


def not_reloaded(page: Any) -> bool:
    return page.evaluate("() => window.__marker === 1")


def test_a_write_on_the_other_replica_shows_on_the_flags_list_without_a_reload(
        live: LiveStack, browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, live, live.view_key, live.a)
    page.wait_for_url("**/ui/")
    open_live_page(page, live.url("/ui/flags"))
    # A search in progress: the live refresh keeps its query, its focus and its value.
    page.fill("#q", "legacy")
    page.wait_for_function("() => document.querySelectorAll('tr[data-testid=flag-row]')"
                           ".length === 1")
    row = 'tr[data-flag-key="legacy-search"] .state'
    before = page.text_content(row)
    new_state = "ENABLED" if before == "disabled" else "DISABLED"
    put_document(live, with_state(document(live), "legacy-search", new_state))
    page.wait_for_function(f"() => document.querySelector('{row}').textContent === "
                           f"'{new_state.lower()}'")
    assert not_reloaded(page)
    assert page.input_value("#q") == "legacy"
    assert page.evaluate("() => document.activeElement.id") == "q"
    assert page.eval_on_selector_all('tr[data-testid="flag-row"]',
                                     "rows => rows.map(r => r.dataset.flagKey)") == [
        "legacy-search"]
    assert page.ui_errors == []  # under the real CSP
    page.context.close()


def test_a_version_and_a_request_made_on_the_other_replica_show_on_the_env_page(
        live: LiveStack, browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, live, live.view_key, live.a)
    page.wait_for_url("**/ui/")
    open_live_page(page, live.url("/ui/"))
    version = int(page.text_content('[data-testid="env-version"]'))
    requests = int(page.text_content('[data-testid="env-requests"]'))
    doc = document(live)
    state = doc["flags"]["new-checkout"]["state"]
    written = put_document(live, with_state(doc, "new-checkout",
                                            "DISABLED" if state == "ENABLED" else "ENABLED"))
    assert written == version + 1
    page.wait_for_function("v => document.querySelector('[data-testid=env-version]')"
                           ".textContent === String(v)", arg=written)
    assert not_reloaded(page)
    with live.b.client(live.admin_key) as c:  # a request: no rules change, only the outbox
        created = c.post(f"{BASE}/requests", json={
            "change": {"flag": "new-checkout", "op": "default", "variant": "on"},
            "message": "live test"})
    assert created.status_code == 201, created.text
    page.wait_for_function("n => document.querySelector('[data-testid=env-requests]')"
                           ".textContent === String(n)", arg=requests + 1)
    assert not_reloaded(page)
    assert page.text_content('[data-testid="env-version"]') == str(written)  # nothing applied
    assert page.ui_errors == []
    page.context.close()


def test_a_write_made_between_the_render_and_the_stream_shows_without_a_reload(
        live: LiveStack, browser: Any) -> None:
    """The page's stream is held back until a write has landed: what the watcher reads begins
    after that write, so only the stream's first event (``opened``) brings it to the page."""
    page = new_page(browser)
    sign_in(page, live, live.view_key, live.a)
    page.wait_for_url("**/ui/")
    doc = document(live)
    state = doc["flags"]["new-checkout"]["state"]
    written: list[int] = []

    def write_then_connect(route: Any) -> None:
        if not written:
            written.append(put_document(live, with_state(
                doc, "new-checkout", "DISABLED" if state == "ENABLED" else "ENABLED")))
            live.a.wait_version(written[0])  # a's rules moved before its stream's listener
        route.continue_()

    page.route("**/ui/events", write_then_connect)
    rendered = open_live_page(page, live.url("/ui/"))
    (version,) = written
    assert f'data-testid="env-version">{version - 1}<' in rendered
    page.wait_for_function("v => document.querySelector('[data-testid=env-version]')"
                           ".textContent === String(v)", arg=version)
    assert not_reloaded(page)
    page.context.close()


def test_a_change_made_while_a_reload_is_out_shows_once_that_reload_ends(
        live: LiveStack, browser: Any) -> None:
    """The environment page's reload is held at the network with an answer read before a
    change request is made; the request's event (its only one: no rules change, no counts on
    these replicas) asks for another reload meanwhile, which htmx queues behind the first.
    Once the held answer is swapped in, the queued reload must still run."""
    page = new_page(browser)
    sign_in(page, live, live.view_key, live.a)
    page.wait_for_url("**/ui/")
    open_live_page(page, live.url("/ui/"))
    page.wait_for_function("() => window.__htmxDone.includes('get /ui/')")  # the opening one
    reload = HeldReload(page, "**/ui/")
    reload.start("#env-live")
    requests = int(page.text_content('[data-testid="env-requests"]'))
    seen = page.evaluate("() => window.__sseChanged")
    with live.b.client(live.admin_key) as c:
        created = c.post(f"{BASE}/requests", json={
            "change": {"flag": "welcome-banner", "op": "disable"}, "message": "queued"})
    assert created.status_code == 201, created.text
    page.wait_for_function("n => window.__sseChanged > n", arg=seen)  # queued behind it
    reload.release()
    page.wait_for_function("n => document.querySelector('[data-testid=env-requests]')"
                           ".textContent === String(n)", arg=requests + 1)
    assert not_reloaded(page)
    page.context.close()


# -- over HTTP --------------------------------------------------------------------------------
def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def http_sign_in(client: httpx.AsyncClient, proxy: ProxyServer, key: str) -> str:
    """Signs ``client`` in on ``proxy`` (the cookie stays in its jar); the session's CSRF."""
    form = await client.get(f"{proxy.url}/ui/signin")
    answer = await client.post(f"{proxy.url}/ui/signin",
                               data={"key": key, "csrf": _csrf(form.text)})
    assert answer.status_code == 303, answer.text
    page = await client.get(f"{proxy.url}/ui/")
    assert page.status_code == 200
    return _csrf(page.text)


def in_own_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run an async test body on a loop of its own thread: Playwright's sync API (the browser
    fixture of this module) holds the main thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def test_a_signed_out_session_gets_no_more_events(live: LiveStack) -> None:
    in_own_loop(signed_out_session(live))


async def signed_out_session(live: LiveStack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        csrf = await http_sign_in(client, live.a, live.view_key)
        events_url = f"{live.a.url}/ui/events"
        async with Stream(client, events_url) as stream:
            await took_the_opening_event(stream)
            doc = await asyncio.to_thread(document, live)
            version = await asyncio.to_thread(
                put_document, live, with_state(doc, "welcome-banner", "DISABLED"))
            event = await stream.next()
            assert event.event == "changed"
            assert "rules" in data(event)["what"] and data(event)["version"] >= version
            # Signed out on the other replica (the same cookie and token: any replica
            # accepts them); the jar's cookie is kept to replay it below.
            cookie = client.cookies.get("flagedge_ui")
            out = await client.post(f"{live.b.url}/ui/signout", data={"csrf": csrf})
            assert out.status_code == 303
            await asyncio.to_thread(put_document, live,
                                    with_state(doc, "welcome-banner", "ENABLED"))
            await stream.wait_ended()
            late = [e for e in _drain(stream) if e.event == "changed"]
            assert late == []
        client.cookies.set("flagedge_ui", cookie)
        again = await client.get(events_url)
        assert again.status_code == 401 and "location" not in again.headers


async def took_the_opening_event(stream: Stream) -> None:
    assert data(await stream.next()) == {"what": list(KINDS), "opened": True}


def _drain(stream: Stream) -> list[Any]:
    out = []
    while not stream.events.empty():
        out.append(stream.events.get_nowait())
    return out


def test_the_stream_says_changed_after_a_write_and_ends_when_its_serve_stops(
        live: LiveStack) -> None:
    in_own_loop(stream_until_stop(live))


async def stream_until_stop(live: LiveStack) -> None:
    # Flushes its insight counts twice a second: a count made there shows soon.
    c = ProxyServer(live.redis, live.workdir / "c", env=ENV,
                    environ={"FLAGEDGE_INSIGHTS_FLUSH": "0.5"})
    c.start()
    try:
        await asyncio.to_thread(c.wait_version, 1)
        await asyncio.to_thread(wait_until, lambda: c.key_works(live.view_key), 10)
        async with httpx.AsyncClient(timeout=10) as client:
            await http_sign_in(client, c, live.view_key)
            async with Stream(client, f"{c.url}/ui/events") as stream:
                await took_the_opening_event(stream)
                doc = await asyncio.to_thread(document, live)
                version = await asyncio.to_thread(
                    put_document, live, with_state(doc, "mobile-offline-mode", "DISABLED"))
                event = await stream.next()
                assert event.event == "changed" and data(event)["version"] >= version
                # Evaluations there are counted, flushed to Redis, and the stream says so.
                client_key = await asyncio.to_thread(c.create_key, "client")
                evaluated = await client.post(
                    f"{c.url}/ofrep/v1/evaluate/flags/new-checkout",
                    json={"context": {"targetingKey": "user-1"}},
                    headers={"Authorization": f"Bearer {client_key}"})
                assert evaluated.status_code == 200, evaluated.text
                while "counts" not in data(event)["what"]:
                    event = await stream.next()
                started = time.monotonic()
                stopping = asyncio.create_task(asyncio.to_thread(c.stop))
                await stream.wait_ended(timeout=5)
                assert await stopping == 0
                assert time.monotonic() - started < 5  # not the 10 s graceful budget
                assert stream.error is None  # a clean end, not a broken connection
    finally:
        c.close()
    assert "ui live" not in c.logs()  # no watcher failure logged
    assert live.view_key not in c.logs()
