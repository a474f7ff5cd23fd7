"""A release through the management UI, end to end (issue 25's first scenario), in Chromium
against two real `flagedge serve` replicas on one real redis-server, in three browser
contexts at once:

- Ann (``propose``), on replica a, edits ``new-checkout`` to 50 % in the flag page's JSON
  editor, checks it (the impact preview), and proposes it (the environment needs 1 approval);
- Bob (``approve``), on replica b, has the requests inbox open: Ann's request appears there
  without a reload (the live channel), he opens it and approves;
- the ``examples/web`` demo page (the OFREP web provider), served by replica a, shows a user
  whose value the change flips, and shows the new value without a reload;
- the history shows the three steps with their names.

Nothing is mocked: the user is chosen by running the engine on the rules before and after.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate
from proxy.release import publisher
from proxy.storage import policy
from tests.e2e.conftest import FLAGS_FILE
from tests.e2e.pageutil import shown, wait_ready
from tests.e2e.test_ui import axe_and_screenshots, new_page, sign_in
from tests.e2e.ui_support import admin_keys, htmx_post, known_everywhere, replicas
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV = "release"
FLAG = "new-checkout"
HALF = {"fractional": [["on", 50], ["off", 50]]}
LIVE_DEADLINE_MS = 5_000  # a write on one replica -> another replica's open page


@dataclass
class Stack:
    redis: RedisServer
    a: ProxyServer  # Ann's UI and the demo page
    b: ProxyServer  # Bob's UI
    ann: str
    bob: str
    client_key: str

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.a).url}{path}"

    def version(self) -> int:
        return publisher.read_state(self.a.redis_client, ENV).version


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[Stack]:
    with replicas(tmp_path_factory.mktemp("uirelease"), ENV,
                  extra_args={"a": ["--demo"]}) as (redis, (a, b)):
        policy.write(a.redis_client, ENV, policy.Policy(1))
        made = admin_keys([a, b], ENV, {"ann": ("propose",), "bob": ("approve",)})
        client_key = a.create_key("client", name="demo-page")
        known_everywhere([a, b], [client_key])
        yield Stack(redis, a, b, made["ann"], made["bob"], client_key)


def flipped_user(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A user the change turns from off to on, by the engine itself."""
    old, new = compile_document(before), compile_document(after)
    for i in range(1_000):
        user = f"user-{i}"
        if (evaluate(old, FLAG, {"targetingKey": user}).value is False
                and evaluate(new, FLAG, {"targetingKey": user}).value is True):
            return user
    raise AssertionError("no user flips: the change does nothing?")


def signed_in(browser: Any, stack: Stack, key: str, proxy: ProxyServer) -> Any:
    page = new_page(browser, axe=True)
    assert sign_in(page, stack, key, proxy).status == 303
    page.wait_for_url(stack.url("/ui/", proxy))
    return page


def test_ann_proposes_50_percent_bob_approves_live_and_the_demo_page_follows(
        stack: Stack, browser: Any) -> None:
    before_doc = orjson.loads(FLAGS_FILE.read_bytes())
    edited = {**copy.deepcopy(before_doc["flags"][FLAG]), "targeting": HALF}
    after_doc = {**before_doc, "flags": {**before_doc["flags"], FLAG: edited}}
    user = flipped_user(before_doc, after_doc)
    version = stack.version()

    # The demo page, its payments row bound to new-checkout (a boolean): off for this user.
    demo = browser.new_context(viewport={"width": 900, "height": 600}).new_page()
    demo.goto(stack.url(f"/demo/?key={stack.client_key}&user={user}&payments={FLAG}"))
    wait_ready(demo)
    assert shown(demo)["payments"] == {**shown(demo)["payments"], "key": FLAG, "value": "false"}
    demo.evaluate("() => { window.__sameDocument = 'yes'; }")

    # Bob's inbox on replica b: nothing open yet.
    bob = signed_in(browser, stack, stack.bob, stack.b)
    bob.goto(stack.url("/ui/requests", stack.b))
    assert bob.locator('tr[data-testid="request-row"][data-state="open"]').count() == 0
    bob.evaluate("() => { window.__marker = 1; }")

    # Ann, on replica a: the flag page, the 50 % edit, its impact, the proposal.
    ann = signed_in(browser, stack, stack.ann, stack.a)
    ann.goto(stack.url(f"/ui/flags/{FLAG}"))
    assert ann.text_content('[data-testid="save"]') == "Propose"
    ann.fill("#flag-json", orjson.dumps(edited, option=orjson.OPT_INDENT_2).decode())
    assert htmx_post(ann, '[data-testid="check"]', "/check").status == 200
    changed = int(ann.text_content('[data-testid="impact-changed"]'))
    assert changed > 0  # some sampled users move: 25 % -> 50 %
    axe_and_screenshots(ann, "release-ann-check")
    ann.fill("#message", "new checkout to 50 %")
    assert htmx_post(ann, '[data-testid="save"]', "/save").status == 200
    link = ann.locator('[data-testid="request-link"]')
    request_id = int(link.get_attribute("href").rsplit("/", 1)[1])
    assert stack.version() == version  # proposed, nothing applied

    # Bob sees it appear without a reload, opens it and approves.
    row = bob.locator(f'tr[data-request-id="{request_id}"]')
    row.wait_for(timeout=LIVE_DEADLINE_MS)
    assert bob.evaluate("() => window.__marker") == 1  # the same document: no reload
    assert row.get_attribute("data-state") == "open" and "ann" in row.inner_text()
    axe_and_screenshots(bob, "release-bob-inbox")
    row.locator("a").click()
    bob.wait_for_url(f"**/ui/requests/{request_id}")
    assert f"{FLAG}" in bob.inner_text('[data-testid="impact"]')
    bob.click('[data-testid="approve"]')
    assert f"now at version {version + 1}" in bob.text_content('[data-testid="action-outcome"]')
    assert stack.version() == version + 1

    # The demo page follows over its stream: the new value, the same document.
    demo.wait_for_function(
        "() => document.querySelector('tr[data-testid=flag-payments]').dataset.value === 'true'",
        timeout=LIVE_DEADLINE_MS)
    assert demo.evaluate("() => window.__sameDocument") == "yes"

    # History: proposed by ann, approved by bob, the version (author ann).
    bob.goto(stack.url("/ui/history", stack.b))
    steps = bob.eval_on_selector_all(
        f'[data-testid="step"][data-request="{request_id}"]',
        "els => els.map(e => [e.dataset.kind, e.dataset.who])")
    assert steps == [["version", "ann"], ["approved", "bob"], ["proposed", "ann"]]
    axe_and_screenshots(bob, "release-history")
    for page in (demo, bob, ann):
        page.context.close()
