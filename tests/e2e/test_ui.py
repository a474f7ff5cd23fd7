"""The management UI (DESIGN §12, first slice) in Chromium against two real `flagedge serve`
processes on one real redis-server: sign-in, the environment and flags pages, refusals,
sign-out across replicas, Redis down, axe-core, screenshots at 1280 and 390 px.

One Redis and two proxies for the module (they are slow to start; the tests share them and
each signs in in its own browser context). The Redis-down test runs last and restarts Redis.
Screenshots land in ``tests/artifacts/ui/`` (gitignored): look at them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.storage import keys
from tests.e2e import setup_browser
from tests.e2e.conftest import FLAGS_FILE
from tests.e2e.ui_support import HTMX_DONE_LOG, admin_keys, replicas
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
AXE = setup_browser.NPM_CACHE_DIR / "node_modules" / "axe-core" / "axe.min.js"
ENV = "ui"
WIDTHS = (1280, 390)


@dataclass
class UiStack:
    redis: RedisServer
    a: ProxyServer
    b: ProxyServer
    view_key: str  # ann: roles view

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.a).url}{path}"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[UiStack]:
    with replicas(tmp_path_factory.mktemp("ui"), ENV) as (redis, (a, b)):
        made = admin_keys([a, b], ENV, {"ann": ("view",)})
        yield UiStack(redis, a, b, made["ann"])


def new_page(browser: Any, *, axe: bool = False) -> Any:
    """A page in a fresh context (its own cookies). ``axe``: CSP bypassed so axe-core can be
    injected as an inline script; the other pages run under the UI's real CSP."""
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 900},
                                  bypass_csp=axe)
    context.add_init_script(HTMX_DONE_LOG)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404
            else None)
    page.ui_errors = errors
    return page


def sign_in(page: Any, ui: UiStack, key: str, proxy: ProxyServer | None = None) -> Any:
    page.goto(ui.url("/ui/", proxy))
    page.wait_for_url("**/ui/signin")
    page.fill("#key", key)
    with page.expect_response(lambda r: r.url.endswith("/ui/signin")
                              and r.request.method == "POST") as answer:
        page.click("form.signin button[type=submit]")
    return answer.value


def flag_keys_shown(page: Any) -> list[str]:
    return page.eval_on_selector_all('tr[data-testid="flag-row"]',
                                     "rows => rows.map(r => r.dataset.flagKey)")


def axe_and_screenshots(page: Any, name: str) -> None:
    """At each width: no serious or critical axe-core violation, and a full-page screenshot."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name} at {width}px: {bad}"
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)


def test_sign_in_shows_the_environment_and_the_pushed_flags(ui: UiStack, browser: Any) -> None:
    page = new_page(browser)
    answer = sign_in(page, ui, ui.view_key)
    assert answer.status == 303
    page.wait_for_url("**/ui/")
    assert page.text_content('[data-testid="who-name"]') == "ann"
    assert page.text_content('[data-testid="who-roles"]').strip() == "roles: view"
    assert page.text_content('[data-testid="env-version"]') == "1"
    pushed = sorted(orjson.loads(FLAGS_FILE.read_bytes())["flags"])
    assert page.text_content('[data-testid="env-flags"]') == str(len(pushed))
    page.click("nav >> text=Flags")
    page.wait_for_url("**/ui/flags")
    assert flag_keys_shown(page) == pushed
    # A view key sees no write control: the one form that posts is sign-out.
    assert page.eval_on_selector_all("form[method=post]", "fs => fs.map(f => f.action)") == [
        ui.url("/ui/signout")]
    assert ui.view_key not in page.content()
    # The search filter, through htmx (no reload: the input keeps its focus).
    page.fill("#q", "kill")
    page.wait_for_function("() => document.querySelectorAll('tr[data-testid=flag-row]')"
                           ".length === 1")
    assert flag_keys_shown(page) == [k for k in pushed if "kill" in k]
    assert page.evaluate("() => document.activeElement.id") == "q"
    assert page.ui_errors == []  # under the real CSP: htmx loads and runs
    page.context.close()
    assert ui.view_key not in ui.a.logs()


def test_each_page_passes_axe_at_desktop_and_phone_width(ui: UiStack, browser: Any) -> None:
    page = new_page(browser, axe=True)
    page.goto(ui.url("/ui/signin"))
    axe_and_screenshots(page, "signin")
    sign_in(page, ui, ui.view_key)
    page.wait_for_url("**/ui/")
    axe_and_screenshots(page, "environment")
    page.goto(ui.url("/ui/flags"))
    axe_and_screenshots(page, "flags")
    page.context.close()


def test_a_wrong_key_shows_an_error(ui: UiStack, browser: Any) -> None:
    page = new_page(browser)
    answer = sign_in(page, ui, "fe_admin_not-a-real-key")
    assert answer.status == 401
    assert "not a valid admin key" in page.text_content('[data-testid="signin-error"]')
    assert "fe_admin_not-a-real-key" not in page.content()
    assert page.context.cookies() == [c for c in page.context.cookies()
                                      if c["name"] != "flagedge_ui"]
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(ui: UiStack, browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, ui, ui.view_key)
    page.wait_for_url("**/ui/")
    refused = page.request.post(ui.url("/ui/signout"), form={"other": "x"},
                                max_redirects=0)
    assert refused.status == 403
    forged = page.request.post(ui.url("/ui/signout"), form={"csrf": "forged"},
                               max_redirects=0)
    assert forged.status == 403
    page.reload()
    assert page.url.endswith("/ui/")  # still signed in: nothing was done
    page.context.close()


def test_signing_out_on_one_replica_ends_the_session_on_the_other(ui: UiStack,
                                                                   browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, ui, ui.view_key, ui.a)
    page.wait_for_url(ui.url("/ui/", ui.a))
    # Cookies are not per port: the same browser, on replica b, is signed in there too.
    page.goto(ui.url("/ui/flags", ui.b))
    assert page.url == ui.url("/ui/flags", ui.b)
    assert page.text_content('[data-testid="who-name"]') == "ann"
    cookie = next(c for c in page.context.cookies() if c["name"] == "flagedge_ui")
    page.goto(ui.url("/ui/", ui.a))
    page.click('[data-testid="signout"]')
    page.wait_for_url("**/ui/signin?notice=signed-out")
    # Replay the old cookie against b: b checks the revocation set in Redis.
    page.context.add_cookies([cookie])
    page.goto(ui.url("/ui/flags", ui.b))
    assert "/ui/signin" in page.url
    page.context.close()


def test_revoking_the_key_ends_its_sessions_on_every_replica(ui: UiStack,
                                                              browser: Any) -> None:
    raw, record = keys.create(ui.a.redis_client, ENV, "admin", "bob", roles=("view",))
    wait_until(lambda: ui.a.key_works(raw) and ui.b.key_works(raw), timeout=10,
               what="bob's key on both proxies")
    page = new_page(browser)
    sign_in(page, ui, raw, ui.a)
    page.wait_for_url(ui.url("/ui/", ui.a))
    cookie = next(c for c in page.context.cookies() if c["name"] == "flagedge_ui")
    keys.revoke(ui.a.redis_client, record.id)

    def ended(proxy: ProxyServer) -> bool:
        # A refusal clears the cookie (so may a page's own live re-fetch, answered after the
        # revocation): each try replays it, on either replica.
        page.context.add_cookies([cookie])
        page.goto(ui.url("/ui/", proxy))
        return "/ui/signin?notice=revoked" in page.url

    for proxy in (ui.b, ui.a):
        wait_until(lambda p=proxy: ended(p), timeout=10, what="session ended by revocation")
    page.context.close()


def test_with_redis_stopped_the_pages_render_read_only_with_a_banner(ui: UiStack,
                                                                      browser: Any) -> None:
    page = new_page(browser, axe=True)
    sign_in(page, ui, ui.view_key)
    page.wait_for_url("**/ui/")
    ui.redis.stop()
    try:
        for path, name in (("/ui/", "environment-readonly"), ("/ui/flags", "flags-readonly")):
            answer = page.goto(ui.url(path))
            assert answer.status == 200
            banner = page.text_content('[data-testid="readonly-banner"]')
            assert "Redis is unreachable" in banner
            axe_and_screenshots(page, name)
        pushed = sorted(orjson.loads(FLAGS_FILE.read_bytes())["flags"])
        assert flag_keys_shown(page) == pushed  # what the proxy last loaded
    finally:
        ui.redis.start()
        page.context.close()
