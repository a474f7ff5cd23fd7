"""Browser end-to-end fixtures: a real redis-server, a real `flagedge serve --demo` process
(restartable on the same port) and Debian's Chromium driven by Playwright.

Nothing here is mocked: the page is the esbuild bundle of ``examples/web`` (the OpenFeature
web SDK with ``@openfeature/ofrep-web-provider``), it talks to the proxy over HTTP and follows
the SSE URL the proxy hands out in ``eventStreams``. Screenshots and the browser console of
every page land in ``tests/artifacts/e2e/`` whether the test passed or failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e import setup_browser
from tests.integration.conftest import ProxyServer  # the api helper's real-server harness
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "e2e"
FLAGS_FILE = ROOT / "config" / "flags.json"
ENV = "e2e"

# The flags from the machine notes: without the background-networking ones Chromium keeps
# trying Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@dataclass
class Stack:
    redis: RedisServer
    proxy: ProxyServer
    key: str
    env: str = ENV
    extra: dict[str, Any] = field(default_factory=dict)

    def demo_url(self, user: str, **params: str) -> str:
        query = httpx.QueryParams({"key": self.key, "user": user, **params})
        return f"{self.proxy.url}/demo/?{query}"

    def bulk(self, context: dict[str, Any]) -> dict[str, Any]:
        """What the proxy answers over OFREP for ``context`` (the page must show the same)."""
        r = httpx.post(f"{self.proxy.url}/ofrep/v1/evaluate/flags",
                       headers={"Authorization": f"Bearer {self.key}"},
                       json={"context": context}, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    """Chromium + npm packages + the esbuild bundle (each step skipped when done)."""
    try:
        return setup_browser.ensure_all()["bundle"]
    except setup_browser.SetupError as exc:
        pytest.fail(f"browser test setup failed: {exc}")


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path, demo_bundle: Path) -> Iterator[Stack]:
    """Redis + `flagedge serve --demo` on env ``e2e`` with config/flags.json and a client key."""
    proxy = ProxyServer(redis_server, tmp_path / "proxy", env=ENV, extra_args=["--demo"])
    proxy.start()
    try:
        proxy.push(FLAGS_FILE.read_bytes())
        key = proxy.create_key("client", name="e2e-browser")
        yield Stack(redis=redis_server, proxy=proxy, key=key)
    finally:
        try:
            proxy.stop()
        except Exception:
            proxy.kill()


@pytest.fixture(scope="module")
def browser(demo_bundle: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(setup_browser.CHROMIUM), args=CHROMIUM_ARGS,
                               headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``open_page(url)`` -> a Playwright page in a fresh browser context (its own storage,
    so its own user and cache). Each page is screenshotted and its console saved at the end."""
    opened: list[tuple[Any, Any, list[str]]] = []

    def _open(url: str, name: str = "") -> Any:
        context = browser.new_context(viewport={"width": 900, "height": 600})
        page = context.new_page()
        console: list[str] = []
        requests: list[tuple[str, str]] = []  # full URLs carry keys/tokens: memory only
        timeline: list[str] = []  # console and network in order, for a failure's message
        opened_at = time.monotonic()

        def note(line: str) -> None:
            timeline.append(f"{time.monotonic() - opened_at:7.2f}s {line}")

        def said(line: str) -> None:
            console.append(line)
            note(line)

        page.on("request", lambda r: requests.append((r.method, r.url)))
        page.on("response", lambda r: note(f"{r.request.method} {urlsplit(r.url).path}"
                                           f" -> {r.status}"))
        page.on("requestfailed", lambda r: note(f"{r.method} {urlsplit(r.url).path} failed:"
                                                f" {r.failure}"))
        page.on("console", lambda m: said(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: said(f"pageerror: {e}"))
        page.set_default_timeout(10_000)
        page.goto(url)
        page.flagedge_name = name or f"page{len(opened)}"  # type: ignore[attr-defined]
        page.flagedge_console = console  # type: ignore[attr-defined]
        page.flagedge_requests = requests  # type: ignore[attr-defined]
        page.flagedge_timeline = timeline  # type: ignore[attr-defined]
        opened.append((context, page, console))
        return page

    yield _open
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    for context, page, console in opened:
        stem = ARTIFACTS / f"{test_name}-{page.flagedge_name}"
        try:
            page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
        except Exception as exc:  # a crashed page still gets its console saved
            console.append(f"screenshot failed: {exc}")
        stem.with_suffix(".console.log").write_text("\n".join(console) + "\n")
        context.close()
