"""proxy.ui.insight_pages in process: the sparkline's drawing and its text alternative, and
(file mode, no Redis) the explain page against ``POST /v1/explain``, the experiments list,
and the administration pages read-only with their controls disabled and writes refused."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.ui.insight_pages import SPARK_H, FlagInsight, sparkline, variant_uses
from tests.unit.ofrep_app import DOC, App
from tests.unit.ui import inproc

EXPERIMENT_DOC: dict[str, Any] = {"flags": {**DOC["flags"], "checkout": {
    "state": "ENABLED", "defaultVariant": "control",
    "variants": {"control": "one-page", "treatment": "two-step"},
    "metadata": {"kind": "experiment", "control": "control", "description": "Two checkouts"},
    "targeting": {"fractional": [["control", 50], ["treatment", 50]]}}}}


async def _signed_in(client: httpx.AsyncClient, app: App) -> None:
    assert (await inproc.sign_in(client, app.keys["admin"])).status_code == 303


def _testid(page: str, name: str) -> str:
    found = re.search(rf'data-testid="{name}"[^>]*>(.*?)</', page, re.S)
    assert found, f"{name} not in the page"
    return html.unescape(found.group(1)).strip()


def test_lines_share_one_scale_and_an_idle_line_lies_at_the_bottom() -> None:
    uses = variant_uses([{"variant": "on", "exposures": 30}, {"variant": None, "exposures": 0}],
                        {"on": [0, 5, 10], None: [0, 0, 0]})
    on, none = uses
    ys = [float(p.split(",")[1]) for p in on.points.split()]
    assert ys == [SPARK_H - 1, SPARK_H / 2, 1.0]  # 0, half the peak, the peak
    assert {float(p.split(",")[1]) for p in none.points.split()} == {SPARK_H - 1}
    assert (on.peak, none.label, on.colour, none.colour) == (10, "(no variant)", 0, 1)
    assert sparkline([7], 7) == ""  # one minute draws no line


def test_the_text_alternative_says_the_numbers_drawn() -> None:
    insight = FlagInsight(variant_uses([{"variant": "on", "exposures": 12}], {"on": [2, 3]}),
                          None, None)
    assert insight.summary() == ("Exposures in the last 24 hours by variant: "
                                 "on 12 (peak 3 a minute).")
    assert FlagInsight((), None, None).summary() == "No exposures in the last 24 hours."


@pytest.mark.asyncio
async def test_explain_shows_what_the_explain_endpoint_answers(tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    context = {"targetingKey": "u1", "plan": "pro"}
    async with inproc.client(app) as client:
        await _signed_in(client, app)
        page = await client.get("/ui/explain", params={"flag": "string-flag",
                                                       "context": orjson.dumps(context).decode()})
        assert page.status_code == 200
        api = await client.post("/v1/explain/string-flag", json={"context": context},
                                headers={"Authorization": f"Bearer {app.keys['server']}"})
    want = api.json()
    assert _testid(page.text, "explain-variant") == want["result"]["variant"] == "pro"
    assert _testid(page.text, "explain-reason") == want["result"]["reason"]
    assert _testid(page.text, "explain-value") == '"Welcome back"'
    path = re.findall(r"<li><code>(.*?)</code></li>", page.text)
    assert [html.unescape(line) for line in path] == want["path"] and path


@pytest.mark.asyncio
@pytest.mark.parametrize(("flag", "context", "error"), [
    ("string-flag", "{not json", "not valid JSON"),
    ("string-flag", "[1]", "must be a JSON object"),
    ("string-flag", '{"targetingKey": 5}', "targetingKey must be a string"),
    ("no-such-flag", "{}", "No flag 'no-such-flag'"),
])
async def test_explain_says_why_it_cannot(tmp_path: Path, flag: str, context: str,
                                          error: str) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await _signed_in(client, app)
        page = await client.get("/ui/explain", params={"flag": flag, "context": context})
    assert error in _testid(page.text, "explain-error")
    assert 'data-testid="explained"' not in page.text


@pytest.mark.asyncio
async def test_experiments_lists_the_served_experiments_and_needs_redis_for_results(
        tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path, EXPERIMENT_DOC)
    async with inproc.client(app) as client:
        await _signed_in(client, app)
        page = await client.get("/ui/experiments")
        results = await client.get("/ui/experiments/checkout", params={"event": "purchase"})
    assert re.findall(r'data-testid="experiment" data-flag-key="([^"]+)"', page.text) == [
        "checkout"]
    assert "Two checkouts" in page.text
    assert "need Redis" in _testid(page.text, "experiments-error")
    assert results.status_code == 503 and "need Redis" in results.text


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "post", "reason"), [
    ("/ui/keys", {"name": "x", "kind": "client"}, "create-key-reason"),
    ("/ui/webhooks", {"url": "http://127.0.0.1/x", "allow_private": "1"}, "add-webhook-reason"),
])
async def test_admin_pages_in_file_mode_disable_writes_and_refuse_them(
        tmp_path: Path, path: str, post: dict[str, str], reason: str) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await _signed_in(client, app)
        page = await client.get(path)
        assert page.status_code == 200
        assert "Read-only" in _testid(page.text, reason)
        assert re.search(rf'disabled aria-describedby="{reason}"', page.text)
        refused = await client.post(path, data={**post, "csrf": inproc.csrf_in(page.text)})
        no_token = await client.post(path, data=post)
    assert refused.status_code == 503 and "read-only" in _testid(refused.text, "action-error")
    assert 'data-testid="new-key"' not in refused.text
    assert no_token.status_code == 403
