"""The UI's insight pages (DESIGN §11, §12) in Chromium against a real `flagedge serve` on a
real redis-server, after scripted OFREP traffic and tracked events: the flags list and the
experiment page show exactly the numbers `python -m proxy insights ... --json` prints (run
as a subprocess against the same Redis), the stale filter lists what `insights stale` lists,
explain shows the rule path of a targeted context; axe-core and screenshots on each page.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.storage import insights as stored
from proxy.storage import keys
from tests.e2e.test_ui import axe_and_screenshots, flag_keys_shown, new_page, sign_in
from tests.e2e.ui_support import live_reload, replicas
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

ENV = "uiins"
FAST = {"FLAGEDGE_INSIGHTS_FLUSH": "0.2", "FLAGEDGE_TRACK_RATE": "0"}
USERS = [{"targetingKey": f"u{i}", "country": "DE" if i % 3 else "CH"} for i in range(240)]
STAFF = [{"targetingKey": f"staff{i}", "email": f"s{i}@flagedge.dev"} for i in range(6)]
BUYERS = [u["targetingKey"] for i, u in enumerate(USERS) if i % 5 == 0]
EXPERIMENT, EVENT = "search-ranking", "purchase"
OLD_FLAG = "legacy-search"  # first served 40 days ago (seeded): stale, served off to everyone


@dataclass
class InsightStack:
    redis: RedisServer
    proxy: ProxyServer
    view_key: str

    def url(self, path: str, proxy: ProxyServer | None = None) -> str:
        return f"{(proxy or self.proxy).url}{path}"

    def cli(self, *args: str) -> dict[str, Any]:
        """`python -m proxy insights ARGS --env ENV --json` against the same Redis."""
        out = subprocess.run([sys.executable, "-m", "proxy", "insights", *args, "--env", ENV,
                              "--redis", self.redis.url, "--json"], capture_output=True,
                             check=True, timeout=60)
        return orjson.loads(out.stdout)


def _known(proxy: ProxyServer, client_key: str, admin_key: str) -> bool:
    """Both keys taken (an empty track batch is 400 once the key is known, 401 before)."""
    track = httpx.post(f"{proxy.url}/v1/track", json=[], timeout=2,
                       headers={"Authorization": f"Bearer {client_key}"})
    admin = httpx.get(f"{proxy.url}/v1/admin/insights/stale", timeout=2,
                      headers={"Authorization": f"Bearer {admin_key}"})
    return track.status_code == 400 and admin.status_code == 200


def _traffic(proxy: ProxyServer, client_key: str) -> None:
    """Each user and staff member once over bulk OFREP; the buyers convert."""
    with proxy.client(client_key) as c:
        for ctx in USERS + STAFF:
            r = c.post("/ofrep/v1/evaluate/flags", json={"context": ctx})
            assert r.status_code == 200, r.text
        events = [{"event": EVENT, "targetingKey": tk} for tk in BUYERS]
        r = c.post("/v1/track", json={"events": events})
        assert r.status_code == 202 and r.json()["accepted"] == len(events)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[InsightStack]:
    with replicas(tmp_path_factory.mktemp("ui-insights"), ENV, ("proxy",),
                  environ=FAST) as (redis, (proxy,)):
        # Keys are awaited on routes that evaluate nothing: only the traffic is counted.
        client_key, _ = keys.create(proxy.redis_client, ENV, "client", "shop")
        raw, _ = keys.create(proxy.redis_client, ENV, "admin", "pia", roles=("view",))
        wait_until(lambda: _known(proxy, client_key, raw), timeout=10, what="keys on the proxy")
        _traffic(proxy, client_key)
        stack = InsightStack(redis, proxy, raw)

        def counted() -> bool:
            report = stack.cli("flags")
            served = {r["flag"]: sum(v["exposures"] for v in r["variants"])
                      for r in report["flags"]}
            arms = stack.cli("experiment", EXPERIMENT, "--event", EVENT)["variants"]
            return (served.get("new-checkout") == len(USERS) + len(STAFF)
                    and sum(a["assigned"] for a in arms) == len(USERS)
                    and sum(a["converted"] for a in arms) == len(BUYERS))

        wait_until(counted, timeout=30, what="exposures, assignments and conversions flushed")
        # A flag first served 40 days ago: old enough to be judged stale (insights stale).
        proxy.redis_client.hset(stored.born_key(ENV), OLD_FLAG, int(time.time()) - 40 * 86_400)
        yield stack


def _page_numbers(page: Any) -> dict[str, dict[str, int]]:
    """flag -> variant label -> exposures, as the flags list shows them."""
    return page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('tr[data-testid=flag-row]')].map(r => [r.dataset.flagKey,
          Object.fromEntries([...r.querySelectorAll('[data-testid=variant-exposures]')]
            .map(li => [li.dataset.variant, Number(li.dataset.exposures)]))]))""")


def test_the_flags_list_shows_the_numbers_insights_flags_prints(stack: InsightStack,
                                                                 browser: Any) -> None:
    page = new_page(browser, axe=True)
    sign_in(page, stack, stack.view_key)
    page.wait_for_url("**/ui/")
    page.goto(stack.url("/ui/flags"))
    report = stack.cli("flags")
    want = {r["flag"]: {(v["variant"] if v["variant"] is not None else "(no variant)"):
                        v["exposures"] for v in r["variants"]} for r in report["flags"]}
    assert _page_numbers(page) == want
    assert want["new-checkout"] and sum(want["new-checkout"].values()) == len(USERS) + len(STAFF)
    users = page.get_attribute('[data-testid="unique-users"]', "data-value")
    assert int(users) == report["unique_users"]  # a HyperLogLog: about the users sent
    assert abs(report["unique_users"] - len(USERS) - len(STAFF)) <= 0.02 * len(USERS)
    assert page.text_content('[data-testid="usage"]') == report["usage"]
    last = {r["flag"]: r["last_evaluated"] for r in report["flags"]}
    shown = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        'tr[data-testid=flag-row]')].map(r => [r.dataset.flagKey,
        r.querySelector('[data-testid=last-evaluated]').dataset.value]))""")
    assert {k: int(v) if v else None for k, v in shown.items()} == last
    # The sparkline's text alternative carries the same numbers.
    label = page.get_attribute('tr[data-flag-key="new-checkout"] svg.spark', "aria-label")
    for variant, n in want["new-checkout"].items():
        assert f"{variant} {n} " in label
    axe_and_screenshots(page, "insights-flags")
    page.context.close()


def test_the_stale_filter_lists_what_insights_stale_prints(stack: InsightStack,
                                                           browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, stack, stack.view_key)
    page.wait_for_url("**/ui/")
    page.goto(stack.url("/ui/flags"))
    stale = stack.cli("stale")
    assert [r["flag"] for r in stale["flags"]] == [OLD_FLAG]
    marked = page.eval_on_selector_all(
        'tr[data-testid=flag-row]:has(.stale-mark)', "rows => rows.map(r => r.dataset.flagKey)")
    assert marked == [OLD_FLAG]
    assert stale["flags"][0]["reason"] in page.text_content(
        f'tr[data-flag-key="{OLD_FLAG}"] [data-testid="stale"]')
    page.check("#stale")  # htmx: the list narrows without a reload
    page.wait_for_function("() => document.querySelectorAll('tr[data-testid=flag-row]')"
                           ".length === 1")
    assert flag_keys_shown(page) == [OLD_FLAG]
    assert page.url.endswith("stale=1")
    assert page.ui_errors == []
    page.context.close()


def test_the_experiment_page_shows_what_insights_experiment_prints(stack: InsightStack,
                                                                   browser: Any) -> None:
    page = new_page(browser, axe=True)
    sign_in(page, stack, stack.view_key)
    page.wait_for_url("**/ui/")
    page.click("nav >> text=Experiments")
    page.wait_for_url("**/ui/experiments")
    listed = page.eval_on_selector_all('[data-testid="experiment"]',
                                       "xs => xs.map(x => x.dataset.flagKey)")
    assert listed == [EXPERIMENT]
    # What the reader is typing outlives a live reload of the list.
    page.fill(f"#event-{EXPERIMENT}", "checkout-start")
    live_reload(page, "#experiment-list", "/ui/experiments")
    assert page.input_value(f"#event-{EXPERIMENT}") == "checkout-start"
    page.fill(f"#event-{EXPERIMENT}", EVENT)
    axe_and_screenshots(page, "insights-experiments")
    page.click(f'[data-testid="experiment"] >> [data-testid="event-link"] >> text={EVENT}')
    page.wait_for_url(f"**/ui/experiments/{EXPERIMENT}?event={EVENT}")
    report = stack.cli("experiment", EXPERIMENT, "--event", EVENT)
    arms = page.evaluate("""() => [...document.querySelectorAll('tr[data-testid=arm]')].map(
        r => r.dataset)""")

    def number(text: str) -> float | None:
        return None if text == "None" else float(text)

    shown = [{"variant": a["variant"], "assigned": int(a["assigned"]),
              "converted": int(a["converted"]), "rate": number(a["rate"]),
              "ci": orjson.loads(a["ci"]), "diff": number(a["diff"]),
              "diff_ci": orjson.loads(a["diffCi"]), "p_value": number(a["pValue"]),
              "test": None if a["test"] == "None" else a["test"]} for a in arms]
    want = [{k: v[k] for k in shown[0]} for v in report["variants"]]
    assert shown == want
    assert sum(a["converted"] for a in shown) == len(BUYERS)
    assert page.text_content('[data-testid="revision"]') == report["revision"]
    assert page.text_content('[data-testid="control"]') == report["control"]
    # The visible numbers are those, rounded: the control's rate with its interval.
    control = next(v for v in report["variants"] if v["variant"] == report["control"])
    row = page.text_content(f'tr[data-variant="{report["control"]}"]')
    assert f"{control['rate'] * 100:.2f} % ({control['ci'][0] * 100:.2f}" in row
    warning = report["srm"]["warning"]
    assert (page.query_selector('[data-testid="srm-warning"]') is None) == (warning is None)
    assert page.text_content('[data-testid="note"]') == f"Note: {report['notes'][0]}"
    axe_and_screenshots(page, "insights-experiment")
    page.context.close()


def test_explain_shows_the_rule_path_of_a_targeted_context(stack: InsightStack,
                                                           browser: Any) -> None:
    page = new_page(browser, axe=True)
    sign_in(page, stack, stack.view_key)
    page.wait_for_url("**/ui/")
    page.click("nav >> text=Explain")
    page.wait_for_url("**/ui/explain")
    page.select_option("#flag", EXPERIMENT)
    context = {"targetingKey": "ann", "email": "ann@flagedge.dev"}
    page.fill("#context", orjson.dumps(context).decode())
    page.click(".explain-form button[type=submit]")
    page.wait_for_selector('[data-testid="explained"]')
    assert page.text_content('[data-testid="explain-variant"]') == "hybrid"
    assert page.text_content('[data-testid="explain-reason"]') == "TARGETING_MATCH"
    assert page.text_content('[data-testid="explain-value"]') == '"bm25+embeddings-v2"'
    path = page.eval_on_selector_all('[data-testid="rule-path"] li',
                                     "lis => lis.map(li => li.textContent)")
    # The same path the explain endpoint gives (a server key), and it names the rule taken.
    server = keys.create(stack.proxy.redis_client, ENV, "server", "explainer")[0]
    wait_until(lambda: stack.proxy.key_works(server), timeout=10, what="server key")
    api = httpx.post(stack.url(f"/v1/explain/{EXPERIMENT}"), json={"context": context},
                     headers={"Authorization": f"Bearer {server}"}, timeout=5).json()
    assert path == api["path"]
    assert path[:2] == ["$ref internal-users", "if[0] condition -> true"]
    axe_and_screenshots(page, "insights-explain")
    page.context.close()
