"""The flag page of the management UI (DESIGN §12, ``proxy.ui.flag_page``) in Chromium against a
real `flagedge serve` on a real redis-server: the JSON editor's check (problems at their
paths, a parse error's line and column, the diff, the impact) and save (through the admin
API's push with If-Match: a raced write is a conflict), the flags list's kill switch reaching
an OFREP client, a protected environment's proposals and kill marks, a view key's disabled
controls and refused forged POSTs, a progressive rollout's steps, axe-core and screenshots.

One Redis and one proxy for the module (slow to start); two environments on them: ``flagui``
(not protected) and ``flagprot`` (1 approval). The tests run in file order and build on the
state the earlier ones left (each says which flags it uses). Screenshots land in
``tests/artifacts/ui/`` (gitignored): look at them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from proxy.release import publisher, review, rollout
from proxy.release.authorization import Actor
from proxy.release.times import iso
from proxy.storage import policy, rollouts
from tests.e2e.conftest import FLAGS_FILE
from tests.e2e.test_ui import axe_and_screenshots, new_page, sign_in
from tests.e2e.ui_support import HeldReload, admin_keys, htmx_post, replicas
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV, PROTECTED = "flagui", "flagprot"
KILL_DEADLINE_S = 1.0  # the kill switch reaches an OFREP client within a second


@dataclass
class FlagStack:
    redis: RedisServer
    proxy: ProxyServer
    ann: str  # flagui: propose, approve, kill
    vic: str  # flagui: view
    pat: str  # flagprot: propose
    kim: str  # flagprot: propose, kill
    client_key: str  # flagui: a client key for OFREP

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.proxy).url}{path}"

    @property
    def redis_client(self) -> Any:
        return self.proxy.redis_client

    def version(self, env: str = ENV) -> int:
        return publisher.read_state(self.redis_client, env).version

    def stored_flag(self, key: str, env: str = ENV) -> dict[str, Any]:
        return publisher.read_state(self.redis_client, env).document().flags[key]

    def evaluate(self, key: str, user: str = "user-7") -> dict[str, Any]:
        """What an OFREP client gets for ``key`` (status and body)."""
        r = httpx.post(self.url(f"/ofrep/v1/evaluate/flags/{key}"),
                       json={"context": {"targetingKey": user}},
                       headers={"Authorization": f"Bearer {self.client_key}"}, timeout=2.0)
        return {"status": r.status_code, **r.json()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Any) -> Iterator[FlagStack]:
    with replicas(tmp_path_factory.mktemp("ui-flag"), ENV, ("proxy",)) as (redis, (proxy,)):
        proxy.push(FLAGS_FILE.read_bytes(), env=PROTECTED)
        policy.write(proxy.redis_client, PROTECTED, policy.Policy(1))
        made = {**admin_keys([proxy], ENV, {"ann": ("propose", "approve", "kill"),
                                            "vic": ("view",)}),
                **admin_keys([proxy], PROTECTED, {"pat": ("propose",),
                                                  "kim": ("propose", "kill")})}
        client_key = proxy.create_key("client", env=ENV, name="flag-page-client")
        yield FlagStack(redis, proxy, client_key=client_key, **made)


def signed_in(browser: Any, stack: FlagStack, key: str, path: str, *, axe: bool = False) -> Any:
    page = new_page(browser, axe=axe)
    assert sign_in(page, stack, key).status == 303
    page.wait_for_url("**/ui/")
    page.goto(stack.url(path))
    return page


def edit_json(page: Any, flag: dict[str, Any] | str) -> None:
    page.fill("#flag-json", flag if isinstance(flag, str) else
              orjson.dumps(flag, option=orjson.OPT_INDENT_2).decode())


def csrf_of(page: Any) -> str:
    """The session's CSRF token, as htmx sends it (the body's hx-headers)."""
    return orjson.loads(page.get_attribute("body", "hx-headers"))["X-CSRF-Token"]


NEW_CHECKOUT_ON = {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "on"}


def test_the_editor_checks_refuses_bad_input_then_saves_what_ofrep_serves(
        stack: FlagStack, browser: Any) -> None:
    """new-checkout in flagui: on for everyone, after two refused attempts and a conflict."""
    page = signed_in(browser, stack, stack.ann, "/ui/flags")
    page.click('tr[data-flag-key="new-checkout"] th a')
    page.wait_for_url("**/ui/flags/new-checkout")
    before = stack.version()
    assert page.text_content('[data-testid="env-version"]') == str(before)
    assert orjson.loads(page.input_value("#flag-json")) == stack.stored_flag("new-checkout")

    edit_json(page, '{\n  "state": "ENABLED",\n  oops\n}')
    assert htmx_post(page, '[data-testid="check"]', "/check").status == 422
    assert page.text_content('[data-testid="parse-position"]') == "line 3, column 3"

    edit_json(page, {**NEW_CHECKOUT_ON, "defaultVariant": "maybe"})
    assert htmx_post(page, '[data-testid="check"]', "/check").status == 422
    paths = page.locator('#check-result [data-testid="problem-path"]').all_text_contents()
    assert paths == ["flags.new-checkout.defaultVariant"]
    assert htmx_post(page, '[data-testid="save"]', "/save").status == 422
    assert page.locator('#save-result [data-testid="problem-path"]').all_text_contents() == paths
    assert stack.version() == before  # nothing written

    edit_json(page, NEW_CHECKOUT_ON)
    assert htmx_post(page, '[data-testid="check"]', "/check").status == 200
    diff = page.text_content('[data-testid="diff"]')
    assert '+  "defaultVariant": "on"' in diff and '-  "defaultVariant": "off"' in diff
    summary = page.locator('[data-testid="diff-summary"] li').all_text_contents()
    assert summary[:2] == ['defaultVariant: "off" -> "on"', "targeting removed"]
    changed = int(page.text_content('[data-testid="impact-changed"]'))
    assert 5_000 < changed < 10_000  # the 75 % the fractional split kept off, roughly
    off = page.locator('[data-testid="impact-variant"][data-variant="off"] td').all_text_contents()
    on = page.locator('[data-testid="impact-variant"][data-variant="on"] td').all_text_contents()
    assert off == [str(changed), "0"] and on == ["0", str(changed)]
    assert stack.version() == before  # a check writes nothing

    page.fill("#message", "new checkout for everyone")
    assert htmx_post(page, '[data-testid="save"]', "/save").status == 200
    assert page.get_attribute('#save-result [data-testid="result"]', "data-kind") == "written"
    assert stack.version() == before + 1
    assert page.text_content('#save-result [data-testid="result"]').strip() == (
        f"Written as version {before + 1}.")
    assert stack.stored_flag("new-checkout") == NEW_CHECKOUT_ON
    wait_until(lambda: stack.evaluate("new-checkout").get("value") is True, timeout=5,
               what="the saved flag served over OFREP")
    # The facts reload themselves after the write (flag-changed).
    page.wait_for_function("v => document.querySelector('[data-testid=env-version]')"
                           ".textContent === v", arg=str(before + 1))
    assert page.input_value("#base-version") == str(before + 1)

    # Another write lands behind the page's back: the next save is a conflict, not an overwrite.
    doc = publisher.read_state(stack.redis_client, ENV).document().to_json()
    doc["flags"]["legacy-search"]["defaultVariant"] = "on"
    stack.proxy.push(doc)
    edit_json(page, {**NEW_CHECKOUT_ON, "defaultVariant": "off"})
    assert htmx_post(page, '[data-testid="save"]', "/save").status == 409
    assert page.get_attribute('#save-result [data-testid="result"]', "data-kind") == "conflict"
    assert "Conflict: version" in page.text_content('#save-result [data-testid="result"]')
    assert stack.stored_flag("new-checkout") == NEW_CHECKOUT_ON
    assert stack.ann not in page.content()
    page.context.close()


def test_the_kill_switch_on_the_flags_list_reaches_an_ofrep_client_within_a_second(
        stack: FlagStack, browser: Any) -> None:
    """payments-kill-switch in flagui."""
    assert stack.evaluate("payments-kill-switch")["value"] is True
    page = signed_in(browser, stack, stack.ann, "/ui/flags")
    row = 'tr[data-flag-key="payments-kill-switch"]'
    answer = htmx_post(page, f'{row} [data-testid="kill"]', "/payments-kill-switch/kill")
    assert answer.status == 200
    wait_until(lambda: stack.evaluate("payments-kill-switch").get("reason") == "DISABLED",
               timeout=KILL_DEADLINE_S, what="the kill switch served over OFREP")
    # The row updated in place (no reload): state and what happened.
    assert page.text_content(f'{row} [data-testid="row-state"]') == "disabled"
    said = page.locator('[data-testid="kill-said"]')
    assert (said.get_attribute("data-flag-key"), said.get_attribute("data-kind")) == (
        "payments-kill-switch", "written")
    assert stack.stored_flag("payments-kill-switch")["state"] == "DISABLED"
    page.context.close()


def test_a_list_reload_older_than_a_kill_never_puts_the_row_back(
        stack: FlagStack, browser: Any) -> None:
    """mobile-offline-mode in flagui. A live reload of the list is out (held at the network,
    its answer read before the kill) when the kill is clicked: the kill drops it, and the row
    stays as the kill's answer left it."""
    page = signed_in(browser, stack, stack.ann, "/ui/flags")
    page.wait_for_function("() => window.__htmxDone.some(p => p === 'get /ui/flags')")
    reload = HeldReload(page, "**/ui/flags*")
    done = page.evaluate("() => window.__htmxDone.length")
    reload.start("#flag-list")
    row = 'tr[data-flag-key="mobile-offline-mode"]'
    assert htmx_post(page, f'{row} [data-testid="kill"]', "/mobile-offline-mode/kill"
                     ).status == 200
    assert page.text_content(f'{row} [data-testid="row-state"]') == "disabled"
    reload.release()  # the kill aborted it: its older answer goes nowhere
    page.wait_for_function("n => window.__htmxDone.slice(n).some(p => p === 'get /ui/flags')",
                           arg=done)
    assert page.text_content(f'{row} [data-testid="row-state"]') == "disabled"
    assert stack.stored_flag("mobile-offline-mode")["state"] == "DISABLED"
    page.context.close()


def test_in_a_protected_environment_a_save_is_proposed_and_a_kill_holder_kills_at_once(
        stack: FlagStack, browser: Any) -> None:
    """flagprot: pat (propose) proposes new-checkout and a kill of it; kim (kill) kills
    payments-kill-switch at once, marked kill."""
    client, before = stack.redis_client, stack.version(PROTECTED)
    page = signed_in(browser, stack, stack.pat, "/ui/flags/new-checkout")
    assert page.text_content('[data-testid="save"]') == "Propose"
    assert "change request that needs 1 approval" in page.text_content(
        '[data-testid="save-why"]')
    edit_json(page, NEW_CHECKOUT_ON)
    page.fill("#message", "new checkout for everyone, please")
    assert htmx_post(page, '[data-testid="save"]', "/save").status == 200
    result = page.locator('#save-result [data-testid="result"]')
    assert result.get_attribute("data-kind") == "proposed"
    (proposed,) = review.list_requests(client, PROTECTED)
    assert result.text_content().strip().startswith(
        f"Request #{proposed.id} proposed: needs 1 approval.")
    assert page.get_attribute('[data-testid="request-link"]', "href") == (
        f"/ui/requests/{proposed.id}")
    assert (proposed.state, proposed.author, proposed.base_version) == ("open", "pat", before)
    assert stack.version(PROTECTED) == before  # nothing applied
    assert stack.stored_flag("new-checkout", PROTECTED)["defaultVariant"] == "off"

    # pat holds no kill role: the kill switch becomes a request too, and says so first.
    assert "becomes a change request" in page.text_content('[data-testid="disable-why"]')
    assert htmx_post(page, '[data-testid="disable"]', "/edit").status == 200
    assert page.get_attribute('#switch-result [data-testid="result"]', "data-kind") == "proposed"
    assert len(review.list_requests(client, PROTECTED)) == 2
    assert stack.stored_flag("new-checkout", PROTECTED)["state"] == "ENABLED"
    page.context.close()

    page = signed_in(browser, stack, stack.kim, "/ui/flags")
    assert "marked kill" in page.text_content('[data-testid="kill-why"]')
    row = 'tr[data-flag-key="payments-kill-switch"]'
    assert htmx_post(page, f'{row} [data-testid="kill"]', "/kill").status == 200
    assert " ".join(page.text_content('[data-testid="kill-said"]').split()) == (
        f"Kill switch of payments-kill-switch: Written as version {before + 1} (marked kill).")
    assert stack.stored_flag("payments-kill-switch", PROTECTED)["state"] == "DISABLED"
    assert publisher.history(client, PROTECTED, 1)[0].kill
    page.context.close()


def test_a_view_key_sees_every_write_control_disabled_and_forged_posts_are_refused(
        stack: FlagStack, browser: Any) -> None:
    """search-ranking in flagui (a rollout of it is started here)."""
    # A running rollout (started by an operator), so a forged pause or abort would apply.
    rollout.start(stack.redis_client, ENV, "search-ranking", variant="semantic", steps=(50, 100),
                  every=3600, actor=Actor.cli("operator"))
    page = signed_in(browser, stack, stack.vic, "/ui/flags/search-ranking")
    controls = page.eval_on_selector_all(
        "main button[data-testid]", """bs => bs.map(b => ({id: b.dataset.testid,
            disabled: b.disabled,
            why: (document.getElementById(b.getAttribute('aria-describedby') || '') || {})
                 .textContent || ''}))""")
    writes = [c for c in controls if c["id"] != "check"]
    assert {c["id"] for c in writes} == {"disable", "enable", "default", "percent", "save",
                                         "rollout-start", "rollout-pause", "rollout-abort"}
    for control in writes:
        assert control["disabled"], control
        assert "needs the" in control["why"] and " role" in control["why"], control
    assert not page.is_disabled('[data-testid="check"]')  # a check writes nothing
    # A forged POST (with the session's CSRF token) to every write route: 403, nothing done.
    before, token = stack.version(), csrf_of(page)
    flag = orjson.dumps({**stack.stored_flag("search-ranking"), "defaultVariant": "hybrid"}
                        ).decode()
    forged = {"search-ranking/save": {"flag": flag, "base_version": str(before),
                                      "message": "forged"},
              "search-ranking/edit": {"op": "disable"}, "search-ranking/kill": {},
              "search-ranking/rollout/pause": {}, "search-ranking/rollout/abort": {},
              # (a start on a flag in a running rollout is refused for that reason first)
              "welcome-banner/rollout": {"variant": "holiday", "steps": "5,100",
                                         "every": "1h"}}
    for action, form in forged.items():
        answer = page.request.post(stack.url(f"/ui/flags/{action}"),
                                   headers={"X-CSRF-Token": token}, form=form, max_redirects=0)
        assert answer.status == 403, (action, answer.status, answer.text())
    assert stack.version() == before
    page.goto(stack.url("/ui/flags"))
    assert page.eval_on_selector_all('[data-testid="kill"]', "bs => bs.every(b => b.disabled)")
    assert "vic may not change this environment: it needs the propose role" in \
        page.text_content('[data-testid="kill-why"]')
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(stack: FlagStack, browser: Any) -> None:
    page = signed_in(browser, stack, stack.ann, "/ui/flags/welcome-banner")
    before = stack.version()
    for form in ({"op": "disable"}, {"op": "disable", "csrf": "forged"}):
        answer = page.request.post(stack.url("/ui/flags/welcome-banner/edit"), form=form,
                                   max_redirects=0)
        assert answer.status == 403
    assert stack.version() == before
    assert stack.stored_flag("welcome-banner")["state"] == "ENABLED"
    page.context.close()


def test_a_rollout_started_in_the_ui_shows_its_steps(stack: FlagStack, browser: Any) -> None:
    """mobile-offline-mode in flagui: started, paused, aborted."""
    page = signed_in(browser, stack, stack.ann, "/ui/flags/mobile-offline-mode")
    assert page.is_visible('[data-testid="no-rollout"]')
    assert page.is_disabled('[data-testid="rollout-pause"]')
    page.select_option("#rollout-variant", "on")
    page.fill("#rollout-steps", "5,25,50,100")
    page.fill("#rollout-every", "1h")
    assert htmx_post(page, '[data-testid="rollout-start"]', "/rollout").status == 200
    assert page.get_attribute('#rollout-result [data-testid="result"]', "data-kind") == "written"
    page.wait_for_selector('[data-testid="rollout-step"]')
    steps = page.locator('[data-testid="rollout-step"]')
    assert steps.count() == 4
    assert [t.split(" from ")[0].strip() for t in steps.all_text_contents()] == [
        "5 %", "25 %", "50 %", "100 %"]
    assert steps.nth(0).get_attribute("aria-current") == "step"
    stored = orjson.loads(rollouts.read(stack.redis_client, ENV, "mobile-offline-mode"))
    times = steps.locator("time").evaluate_all("ts => ts.map(t => t.dateTime)")
    assert times == [iso(stored["start"] + i * 3600) for i in range(4)]
    assert page.text_content('[data-testid="rollout-state"]') == "running"

    assert htmx_post(page, '[data-testid="rollout-pause"]', "/rollout/pause").status == 200
    page.wait_for_function("() => document.querySelector('[data-testid=rollout-state]')"
                           ".textContent === 'paused'")
    assert htmx_post(page, '[data-testid="rollout-abort"]', "/rollout/abort").status == 200
    page.wait_for_function("() => document.querySelector('[data-testid=rollout-state]')"
                           ".textContent === 'aborted'")
    stored = orjson.loads(rollouts.read(stack.redis_client, ENV, "mobile-offline-mode"))
    assert stored["state"] == "aborted"
    page.context.close()


def test_the_flag_page_passes_axe_at_desktop_and_phone_width(stack: FlagStack,
                                                              browser: Any) -> None:
    page = signed_in(browser, stack, stack.ann, "/ui/flags/search-ranking", axe=True)
    axe_and_screenshots(page, "flag")
    flag = stack.stored_flag("search-ranking")
    edit_json(page, {**flag, "defaultVariant": "semantic", "targeting": {}})
    assert htmx_post(page, '[data-testid="check"]', "/check").status == 200
    axe_and_screenshots(page, "flag-checked")
    edit_json(page, {**flag, "defaultVariant": "nope"})
    assert htmx_post(page, '[data-testid="save"]', "/save").status == 422
    axe_and_screenshots(page, "flag-refused")
    page.goto(stack.url("/ui/flags"))
    axe_and_screenshots(page, "flags-kill")
    page.context.close()
    page = signed_in(browser, stack, stack.vic, "/ui/flags/search-ranking", axe=True)
    axe_and_screenshots(page, "flag-view-only")
    page.context.close()


def test_with_redis_stopped_the_flag_page_is_read_only_with_every_control_disabled(
        stack: FlagStack, browser: Any) -> None:
    """Last: it stops Redis (and starts it again)."""
    page = signed_in(browser, stack, stack.ann, "/ui/flags")
    stack.redis.stop()
    try:
        answer = page.goto(stack.url("/ui/flags/welcome-banner"))
        assert answer.status == 200
        assert "Redis is unreachable" in page.text_content('[data-testid="readonly-banner"]')
        controls = page.eval_on_selector_all("main button[data-testid]",
                                             "bs => bs.map(b => [b.dataset.testid, b.disabled])")
        assert len(controls) == 9 and all(disabled for _, disabled in controls), controls
        assert "Read-only" in page.text_content('[data-testid="save-why"]')
        page.goto(stack.url("/ui/flags"))
        assert page.eval_on_selector_all('[data-testid="kill"]', "bs => bs.every(b => b.disabled)")
    finally:
        stack.redis.start()
        page.context.close()
