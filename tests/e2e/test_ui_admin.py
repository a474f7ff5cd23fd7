"""The UI's webhooks and keys pages (DESIGN §10, §12) in Chromium against a real `flagedge
serve` on a real redis-server: a ``manage`` key adds a webhook and sees it listed, creates a
key that is shown exactly once (not after a reload, not in serve's log), works against the
admin API and stops working once revoked from the page; a ``view`` key sees the controls
disabled with their reasons and a forged POST is refused (403); axe-core and screenshots.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.storage import keys
from tests.e2e.test_ui import axe_and_screenshots, new_page, sign_in
from tests.e2e.ui_support import admin_keys, replicas
from tests.integration.conftest import ProxyServer
from tests.integration.webhook_receiver import Receiver, verify
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV = "uiadm"
HOOK_URL = "http://127.0.0.1:9/flagedge-hook"  # loopback: added with "allow private"


@dataclass
class AdminStack:
    redis: RedisServer
    proxy: ProxyServer
    manage_key: str  # mia: view, manage
    view_key: str  # vic: view

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.proxy).url}{path}"

    def admin(self, method: str, path: str, key: str) -> httpx.Response:
        return httpx.request(method, self.url(path), timeout=5,
                             headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[AdminStack]:
    with replicas(tmp_path_factory.mktemp("ui-admin"), ENV, ("proxy",)) as (redis, (proxy,)):
        made = admin_keys([proxy], ENV, {"mia": ("view", "manage"), "vic": ("view",)})
        yield AdminStack(redis, proxy, made["mia"], made["vic"])


def _signed_in(browser: Any, stack: AdminStack, key: str, *, axe: bool = False) -> Any:
    page = new_page(browser, axe=axe)
    sign_in(page, stack, key)
    page.wait_for_url("**/ui/")
    return page


def test_a_manage_key_adds_a_webhook_and_sees_it_listed(stack: AdminStack,
                                                        browser: Any) -> None:
    page = _signed_in(browser, stack, stack.manage_key, axe=True)
    page.click("nav >> text=Webhooks")
    page.wait_for_url("**/ui/webhooks")
    page.fill("#url", HOOK_URL)
    page.check("#allow_private")
    page.click('[data-testid="add-webhook"]')
    page.wait_for_selector('[data-testid="webhook-created"]')
    secret = page.text_content('[data-testid="webhook-secret"]')
    assert secret.startswith("whsec_")
    listed = stack.admin("GET", f"/v1/admin/envs/{ENV}/webhooks", stack.manage_key).json()
    assert [h["url"] for h in listed] == [HOOK_URL]
    row = f'tr[data-webhook-id="{listed[0]["id"]}"]'
    assert HOOK_URL in page.text_content(row)
    assert page.url.endswith("/ui/webhooks")  # htmx: a reload GETs the page
    page.reload()
    assert HOOK_URL in page.text_content(row)
    assert secret not in page.content()  # the signing secret: that answer only
    axe_and_screenshots(page, "admin-webhooks")
    assert page.ui_errors == []
    page.context.close()


def test_send_test_delivers_a_signed_message_and_shows_what_the_receiver_answered(
        stack: AdminStack, browser: Any) -> None:
    receiver = Receiver().start()
    try:
        added = stack.admin("GET", f"/v1/admin/envs/{ENV}/webhooks", stack.manage_key).json()
        page = _signed_in(browser, stack, stack.manage_key)
        page.goto(stack.url("/ui/webhooks"))
        page.fill("#url", receiver.url)
        page.check("#allow_private")
        page.click('[data-testid="add-webhook"]')
        page.wait_for_selector('[data-testid="webhook-created"]')
        secret = page.text_content('[data-testid="webhook-secret"]')
        (hook,) = [h for h in stack.admin("GET", f"/v1/admin/envs/{ENV}/webhooks",
                                           stack.manage_key).json() if h not in added]
        page.click(f'tr[data-webhook-id="{hook["id"]}"] [data-testid="test-webhook"]')
        tested = page.locator('[data-testid="webhook-tested"]')
        tested.wait_for()
        assert tested.get_attribute("data-delivered") == "yes"
        assert "delivered (HTTP 200)" in tested.text_content()
        (got,) = receiver.all()
        assert verify(secret, got.headers, got.body)
        assert (got.json["type"], got.json["data"]["by"]) == ("webhook.test", "mia")
        receiver.always_fail = True
        page.click(f'tr[data-webhook-id="{hook["id"]}"] [data-testid="test-webhook"]')
        page.wait_for_selector('[data-testid="webhook-tested"][data-delivered="no"]')
        assert "not delivered: HTTP 500" in page.text_content('[data-testid="webhook-tested"]')
        assert secret not in page.content()
        page.context.close()
        # A view key: the control is disabled with its reason, and a forged POST refused.
        page = _signed_in(browser, stack, stack.view_key)
        page.goto(stack.url("/ui/webhooks"))
        reason = _disabled_with_reason(
            page, f'tr[data-webhook-id="{hook["id"]}"] [data-testid="test-webhook"]',
            "test-webhook-reason")
        assert "needs the manage role" in reason
        csrf = page.get_attribute('input[name="csrf"]', "value")
        forged = page.request.post(stack.url(f"/ui/webhooks/{hook['id']}/test"),
                                   form={"csrf": csrf}, max_redirects=0)
        assert forged.status == 403
        assert len(receiver.all()) == 2  # nothing sent for the view key
        page.context.close()
    finally:
        receiver.stop()


def test_a_new_key_is_shown_once_works_and_stops_working_when_revoked(stack: AdminStack,
                                                                      browser: Any) -> None:
    page = _signed_in(browser, stack, stack.manage_key, axe=True)
    page.click("nav >> text=Keys")
    page.wait_for_url("**/ui/keys")
    page.fill("#name", "ops-bot")
    page.select_option("#kind", "admin")
    page.check("#role-manage")
    page.click('[data-testid="create-key"]')
    page.wait_for_selector('[data-testid="new-key"]')
    new_key = page.input_value('[data-testid="new-key"]')
    assert new_key.startswith("fe_admin_")
    axe_and_screenshots(page, "admin-key-created")
    created = re.search(r"Key (\S+) \(admin, ops-bot\)",
                        page.text_content('[data-testid="key-created"]')).group(1)
    # The key works against the admin API as ops-bot, with the roles chosen.
    wait_until(lambda: stack.admin("GET", "/v1/admin/keys", new_key).status_code == 200,
               timeout=10, what="the new key on the proxy")
    mine = next(k for k in stack.admin("GET", "/v1/admin/keys", new_key).json()
                if k["id"] == created)
    assert (mine["name"], mine["roles"]) == ("ops-bot", ["view", "manage"])
    # Shown once: a reload (the URL stayed /ui/keys) lists the key without it.
    assert page.url.endswith("/ui/keys")
    page.reload()
    assert page.query_selector(f'tr[data-key-id="{created}"]') is not None
    assert new_key not in page.content()
    assert page.query_selector('[data-testid="new-key"]') is None  # nor a second one made
    assert [r.name for r in keys.list_keys(stack.proxy.redis_client, ENV).values()
            ].count("ops-bot") == 1
    assert new_key not in stack.proxy.logs()
    # Revoked from the page: it stops working at once.
    page.click(f'tr[data-key-id="{created}"] [data-testid="revoke-key"]')
    page.wait_for_selector('[data-testid="key-revoked"]')
    assert page.query_selector(f'tr[data-key-id="{created}"]') is None
    assert stack.admin("GET", "/v1/admin/keys", new_key).status_code == 401
    axe_and_screenshots(page, "admin-keys")
    assert page.ui_errors == []
    page.context.close()
    assert new_key not in stack.proxy.logs()


def _disabled_with_reason(page: Any, control: str, reason_id: str) -> str:
    """The control is disabled and names its visible reason; returns the reason's text."""
    assert page.is_disabled(control)
    assert page.get_attribute(control, "aria-describedby") == reason_id
    reason = page.text_content(f"#{reason_id}")
    assert page.is_visible(f"#{reason_id}")
    return reason


def test_a_view_key_sees_the_controls_disabled_and_a_forged_post_is_refused(
        stack: AdminStack, browser: Any) -> None:
    mia = next(r for r in keys.list_keys(stack.proxy.redis_client, ENV).values()
               if r.name == "mia")
    page = _signed_in(browser, stack, stack.view_key, axe=True)
    page.goto(stack.url("/ui/keys"))
    reason = _disabled_with_reason(page, '[data-testid="create-key"]', "create-key-reason")
    assert "vic may not create keys: it needs the manage role" in reason
    assert page.is_disabled("#name") and page.is_disabled("#role-manage")
    assert "needs the manage role" in page.text_content('[data-testid="keys-error"]')
    csrf = page.get_attribute('input[name="csrf"]', "value")
    axe_and_screenshots(page, "admin-keys-view")
    page.goto(stack.url("/ui/webhooks"))
    reason = _disabled_with_reason(page, '[data-testid="add-webhook"]', "add-webhook-reason")
    assert "vic may not add webhooks: it needs the manage role" in reason
    axe_and_screenshots(page, "admin-webhooks-view")
    before = keys.list_keys(stack.proxy.redis_client, ENV)
    hooks = stack.admin("GET", f"/v1/admin/envs/{ENV}/webhooks", stack.manage_key).json()
    # Forged POSTs with a valid session and CSRF token: the handlers refuse them.
    forged = {"/ui/keys": {"name": "sneaky", "kind": "admin", "role-manage": "1"},
              f"/ui/keys/{mia.id}/revoke": {},
              "/ui/webhooks": {"url": HOOK_URL + "2", "allow_private": "1"}}
    for path, form in forged.items():
        answer = page.request.post(stack.url(path), form={**form, "csrf": csrf},
                                   max_redirects=0)
        assert answer.status == 403, path
        assert "needs the manage role" in answer.text()
    assert keys.list_keys(stack.proxy.redis_client, ENV) == before
    assert stack.admin("GET", f"/v1/admin/envs/{ENV}/webhooks",
                       stack.manage_key).json() == hooks
    page.context.close()
