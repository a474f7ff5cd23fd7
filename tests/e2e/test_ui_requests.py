"""The requests inbox, a request's page and the history timeline (DESIGN §10, §12) in Chromium
against two real `flagedge serve` processes on one real redis-server, the environment
protected (one approval):

Ann (propose) proposes through the admin API; Bob (approve), in his own browser context,
finds it in the inbox, reads its diffs and impact and approves; the other replica serves the
new value over OFREP; the history shows propose, approve and apply with their names. Ann's own
Approve is disabled with the reason and her forged POST is 403; a reject needs a reason and
records it; Carl (kill) rolls back from the history and OFREP serves the old value again; a
view key sees no enabled write control; POSTs without the CSRF token are refused; axe-core and
screenshots on each page.

One Redis and two proxies for the module (slow to start); each test signs in in fresh
browser contexts and makes the requests and versions it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.release import authorization as authz
from proxy.release import publisher
from proxy.release.changeset import Document, make_plan
from proxy.storage import policy
from tests.e2e.test_ui import axe_and_screenshots, new_page, sign_in
from tests.e2e.ui_support import admin_keys, known_everywhere, live_reload, replicas
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV = "uireq"
FLAG = "payments-kill-switch"  # variants on: true / off: false, no targeting
ROLES = {"ann": ("view", "propose"), "bob": ("view", "approve"), "carl": ("view", "kill"),
         "vic": ("view",)}


@dataclass
class Stack:
    redis: RedisServer
    a: ProxyServer
    b: ProxyServer
    keys: dict[str, str]  # person -> admin key
    client_key: str  # for OFREP

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.a).url}{path}"

    @property
    def redis_client(self) -> Any:
        return self.a.redis_client

    def version(self) -> int:
        return publisher.read_state(self.redis_client, ENV).version

    def served_on_b(self, flag: str = FLAG) -> Any:
        """What the OTHER replica (b) serves over OFREP; the UI runs on a."""
        r = httpx.post(f"{self.b.url}/ofrep/v1/evaluate/flags/{flag}", json={"context": {}},
                       headers={"Authorization": f"Bearer {self.client_key}"}, timeout=2.0)
        return r.json().get("value") if r.status_code == 200 else r.status_code

    def propose(self, variant: str, message: str) -> int:
        """Ann's change request over the admin API (her key): FLAG's default -> variant."""
        r = httpx.post(f"{self.a.url}/v1/admin/envs/{ENV}/requests",
                       headers={"Authorization": f"Bearer {self.keys['ann']}"},
                       json={"change": {"flag": FLAG, "op": "default", "variant": variant},
                             "message": message}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def stored_request(self, request_id: int) -> dict[str, Any]:
        return orjson.loads(self.redis_client.hget(f"flagedge:{{{ENV}}}:requests",
                                                   str(request_id)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[Stack]:
    with replicas(tmp_path_factory.mktemp("uireq"), ENV) as (redis, (a, b)):
        made = admin_keys([a, b], ENV, ROLES)
        client_key = a.create_key("client", name="ofrep")
        known_everywhere([a, b], [client_key])
        policy.write(a.redis_client, ENV, policy.Policy(1))
        yield Stack(redis, a, b, made, client_key)


def page_as(browser: Any, stack: Stack, who: str, *, axe: bool = False) -> Any:
    page = new_page(browser, axe=axe)
    answer = sign_in(page, stack, stack.keys[who])
    assert answer.status == 303
    page.wait_for_url("**/ui/")
    return page


def csrf_of(page: Any) -> str:
    """The page's CSRF token, as htmx sends it (the <body>'s hx-headers)."""
    return orjson.loads(page.get_attribute("body", "hx-headers"))["X-CSRF-Token"]


def set_default_directly(stack: Stack, variant: str) -> int:
    """An operator's break-glass write of FLAG's default variant (setup for rollback)."""
    state = publisher.read_state(stack.redis_client, ENV)
    doc = state.document()
    flags = {**doc.flags, FLAG: {**doc.flags[FLAG], "defaultVariant": variant}}
    plan = make_plan(doc, Document(flags, doc.evaluators, doc.metadata))
    result = publisher.write(stack.redis_client, ENV, plan, author="ops", message="setup",
                             guard={"break_glass": "1"})
    return result.version


def enabled_write_controls(page: Any) -> list[str]:
    """Every enabled button, text field and rollback link but sign-out's button."""
    return page.eval_on_selector_all(
        "main button:not([disabled]), main textarea:not([disabled]), "
        "main input:not([type=hidden]):not([type=search]):not([disabled]), "
        "main a[data-testid=rollback]",
        "els => els.map(e => e.outerHTML)")


def test_bob_approves_anns_request_and_the_other_replica_serves_it(stack: Stack,
                                                                   browser: Any) -> None:
    set_default_directly(stack, "on")
    wait_until(lambda: stack.served_on_b() is True, timeout=5, what="on served by b")
    request_id = stack.propose("off", "payments off for the maintenance window")
    before = stack.version()
    bob = page_as(browser, stack, "bob")
    bob.click("nav >> text=Requests")
    bob.wait_for_url("**/ui/requests")
    row = bob.locator(f'tr[data-request-id="{request_id}"]')
    assert row.get_attribute("data-state") == "open"
    assert "ann" in row.inner_text() and "maintenance window" in row.inner_text()
    assert "0 of 1 needed" in row.locator('[data-testid="request-approvals"]').inner_text()
    assert "(UTC, +00:00)" in row.inner_text()  # the time zone, spelled out
    assert bob.text_content('[data-testid="nav-open-requests"]').strip().endswith("open")
    row.locator("a").click()
    bob.wait_for_url(f"**/ui/requests/{request_id}")
    assert bob.text_content('[data-testid="request-author"]') == "ann"
    base_diff = bob.inner_text('[data-testid="diff-base"]')
    assert FLAG in base_diff and "defaultVariant: \"on\" -> \"off\"" in base_diff
    assert "defaultVariant: \"on\" -> \"off\"" in bob.inner_text('[data-testid="diff-live"]')
    impact = bob.inner_text('[data-testid="impact"]')
    assert f"{FLAG}: 100.00 % of 10000 users change" in impact and "on → off" in impact
    assert "still live" in bob.text_content('[data-testid="request-conflict"]')
    expires = bob.text_content('[data-testid="request-expires"]')
    assert expires.strip().endswith("Z (UTC, +00:00)")
    bob.click('[data-testid="approve"]')
    outcome = bob.text_content('[data-testid="action-outcome"]')
    assert f"now at version {before + 1}" in outcome, outcome
    assert stack.version() == before + 1
    assert stack.stored_request(request_id)["state"] == "applied"
    wait_until(lambda: stack.served_on_b() is False, timeout=5,
               what="the approved value served by the other replica")
    assert bob.text_content('[data-testid="request-state"]').strip() == "applied"
    # The history: proposed by ann, approved by bob, then the version (author ann, its marks).
    bob.click("nav >> text=History")
    bob.wait_for_url("**/ui/history")
    steps = bob.eval_on_selector_all(
        f'[data-testid="step"][data-request="{request_id}"]',
        "els => els.map(e => [e.dataset.kind, e.dataset.who])")
    assert steps == [["version", "ann"], ["approved", "bob"], ["proposed", "ann"]]
    version_step = bob.locator(f'[data-testid="step"][data-version="{before + 1}"]')
    assert f"request #{request_id}, approved by bob" in version_step.inner_text()
    version_step.locator("summary").click()  # the diff loads lazily
    assert "defaultVariant: \"on\" -> \"off\"" in version_step.locator(
        '[data-testid="history-diff"]').inner_text()
    # A live reload of the timeline (a change anywhere makes one) leaves the diff open.
    live_reload(bob, "#history-timeline", "/ui/history")
    assert version_step.locator("details").evaluate("d => d.open")
    assert "defaultVariant: \"on\" -> \"off\"" in version_step.locator(
        '[data-testid="history-diff"]').inner_text()
    assert bob.ui_errors == []  # under the real CSP
    bob.context.close()


def test_ann_cannot_approve_her_own_request_and_a_forged_post_is_403(stack: Stack,
                                                                      browser: Any) -> None:
    set_default_directly(stack, "off")  # so that the proposal changes something
    request_id = stack.propose("on", "payments back on")
    before = stack.version()
    ann = page_as(browser, stack, "ann")
    ann.goto(stack.url(f"/ui/requests/{request_id}"))
    approve = ann.locator('[data-testid="approve"]')
    assert approve.is_disabled()
    assert approve.get_attribute("aria-describedby") == "approve-why"
    why = authz.may_approve(authz.Actor("ann", frozenset(ROLES["ann"])), "ann",
                            policy.Policy(1)).reason
    assert ann.text_content('[data-testid="approve-why"]') == why
    assert ann.locator('[data-testid="cancel"]').is_enabled()  # her own: she may withdraw it
    forged = ann.request.post(stack.url(f"/ui/requests/{request_id}/approve"),
                              headers={"X-CSRF-Token": csrf_of(ann)}, max_redirects=0)
    assert forged.status == 403
    assert "approve role" in forged.text()
    assert stack.stored_request(request_id)["approvals"] == []
    assert stack.version() == before
    ann.context.close()


def test_reject_needs_a_reason_and_records_it(stack: Stack, browser: Any) -> None:
    set_default_directly(stack, "off")
    request_id = stack.propose("on", "payments on again")
    bob = page_as(browser, stack, "bob")
    bob.goto(stack.url(f"/ui/requests/{request_id}"))
    assert bob.get_attribute("#reject-reason", "required") is not None
    blank = bob.request.post(stack.url(f"/ui/requests/{request_id}/reject"),
                             headers={"X-CSRF-Token": csrf_of(bob)}, form={"reason": "  "},
                             max_redirects=0)
    assert blank.status == 400 and "say why it is rejected" in blank.text()
    assert stack.stored_request(request_id)["state"] == "open"
    bob.fill("#reject-reason", "not during the sale")
    bob.click('[data-testid="reject"]')
    assert bob.text_content('[data-testid="action-outcome"]') == f"Request {request_id} rejected."
    assert bob.text_content('[data-testid="request-reason"]').endswith(
        "rejected by bob: not during the sale")
    stored = stack.stored_request(request_id)
    assert (stored["state"], stored["reason"]) == ("rejected", "rejected by bob: not during "
                                                               "the sale")
    bob.goto(stack.url("/ui/history"))
    closed = bob.locator(f'[data-testid="step"][data-request="{request_id}"][data-kind="rejected"]')
    assert "not during the sale" in closed.inner_text()
    bob.context.close()


def test_rollback_from_history_restores_the_old_values(stack: Stack, browser: Any) -> None:
    old = set_default_directly(stack, "on")
    wait_until(lambda: stack.served_on_b() is True, timeout=5, what="on served by b")
    new = set_default_directly(stack, "off")
    wait_until(lambda: stack.served_on_b() is False, timeout=5, what="off served by b")
    # Bob (approve, no propose) may not roll back: disabled, with the reason.
    bob = page_as(browser, stack, "bob")
    bob.goto(stack.url("/ui/history"))
    button = bob.locator(f'[data-testid="step"][data-version="{old}"] [data-testid="rollback"]')
    assert button.is_disabled()
    assert "needs the propose role" in bob.text_content('[data-testid="rollback-how"]')
    bob.context.close()
    # Ann's rollback would be a request (the environment is protected): the page says so.
    ann = page_as(browser, stack, "ann")
    ann.goto(stack.url("/ui/history"))
    assert "becomes a change request" in ann.text_content('[data-testid="rollback-how"]')
    ann.context.close()
    carl = page_as(browser, stack, "carl")
    carl.goto(stack.url("/ui/history"))
    assert "kill operation" in carl.text_content('[data-testid="rollback-how"]')
    carl.click(f'[data-testid="step"][data-version="{old}"] [data-testid="rollback"]')
    carl.wait_for_url(f"**/ui/history?rollback={old}#rollback")
    assert "defaultVariant: \"off\" -> \"on\"" in carl.inner_text('[data-testid="rollback-diff"]')
    carl.fill("#rollback-message", "back to on: the window was cancelled")
    carl.click('[data-testid="rollback-confirm"]')
    outcome = carl.text_content('[data-testid="action-outcome"]')
    assert f"now at version {new + 1} (marked kill)" in outcome, outcome
    wait_until(lambda: stack.served_on_b() is True, timeout=5,
               what="the old value served again by the other replica")
    step = carl.locator(f'[data-testid="step"][data-version="{new + 1}"]')
    assert step.get_attribute("data-who") == "carl"
    text = step.inner_text()
    assert "back to on: the window was cancelled" in text and "kill" in text
    carl.context.close()


def test_a_view_key_sees_no_enabled_write_control(stack: Stack, browser: Any) -> None:
    target = set_default_directly(stack, "off")  # a version a rollback would change to
    set_default_directly(stack, "on")
    request_id = stack.propose("off", "for the view test")
    vic = page_as(browser, stack, "vic")
    for path in ("/ui/requests", f"/ui/requests/{request_id}", "/ui/history"):
        vic.goto(stack.url(path))
        assert enabled_write_controls(vic) == [], path
    vic.goto(stack.url(f"/ui/requests/{request_id}"))
    assert "needs the approve role" in vic.text_content('[data-testid="approve-why"]')
    forged = vic.request.post(stack.url(f"/ui/requests/{request_id}/approve"),
                              headers={"X-CSRF-Token": csrf_of(vic)}, max_redirects=0)
    assert forged.status == 403
    forged = vic.request.post(stack.url("/ui/history/rollback"),
                              headers={"X-CSRF-Token": csrf_of(vic)},
                              form={"version": str(target)}, max_redirects=0)
    assert forged.status == 403 and "propose role" in forged.text()
    assert stack.stored_request(request_id)["state"] == "open"
    assert stack.served_on_b() is True
    vic.context.close()


def test_posts_without_the_csrf_token_are_refused(stack: Stack, browser: Any) -> None:
    set_default_directly(stack, "on")
    request_id = stack.propose("off", "for the csrf test")
    before = stack.version()
    for who, path, form in (("bob", f"/ui/requests/{request_id}/approve", {}),
                            ("bob", f"/ui/requests/{request_id}/reject", {"reason": "x"}),
                            ("ann", f"/ui/requests/{request_id}/cancel", {}),
                            ("carl", "/ui/history/rollback", {"version": "1"})):
        page = page_as(browser, stack, who)
        refused = page.request.post(stack.url(path), form=form, max_redirects=0)
        assert refused.status == 403, (who, path)
        assert "security token" in refused.text()
        page.context.close()
    assert stack.stored_request(request_id)["state"] == "open"
    assert stack.version() == before


def test_each_page_passes_axe_at_desktop_and_phone_width(stack: Stack, browser: Any) -> None:
    set_default_directly(stack, "on")
    request_id = stack.propose("off", "for the accessibility scan")
    bob = page_as(browser, stack, "bob", axe=True)
    bob.goto(stack.url("/ui/requests"))
    axe_and_screenshots(bob, "requests")
    bob.goto(stack.url(f"/ui/requests/{request_id}"))
    axe_and_screenshots(bob, "request")
    bob.goto(stack.url("/ui/history"))
    bob.locator('[data-testid="step"][data-kind="version"] summary').first.click()
    bob.wait_for_selector('[data-testid="history-diff"]')
    axe_and_screenshots(bob, "history")
    bob.context.close()
    ann = page_as(browser, stack, "ann", axe=True)  # disabled controls with their reasons
    ann.goto(stack.url(f"/ui/requests/{request_id}"))
    axe_and_screenshots(ann, "request-own")
    target = set_default_directly(stack, "off")  # a version a rollback would change to
    set_default_directly(stack, "on")
    carl = page_as(browser, stack, "carl", axe=True)
    carl.goto(stack.url(f"/ui/history?rollback={target}#rollback"))
    carl.wait_for_selector('[data-testid="rollback-diff"]')
    axe_and_screenshots(carl, "history-rollback")
    carl.context.close()
    ann.context.close()
