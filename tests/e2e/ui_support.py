"""What every UI browser test module sets up: one real redis-server and one or more real
`flagedge serve` replicas on it, config/flags.json pushed, and admin keys with roles that
every replica knows before a test signs in with them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as PlaywrightError

from proxy.storage import keys
from tests.e2e.conftest import FLAGS_FILE
from tests.integration.conftest import ProxyServer
from tests.redis_server import RedisServer
from tests.waiting import wait_until


@contextlib.contextmanager
def replicas(workdir: Path, env: str, names: Iterable[str] = ("a", "b"), *,
             extra_args: Mapping[str, list[str]] | None = None,
             environ: Mapping[str, str] | None = None,
             ) -> Iterator[tuple[RedisServer, list[ProxyServer]]]:
    """Redis and one serve per name (``extra_args[name]``: its own arguments), the demo
    flags pushed to ``env`` and served by all; everything stopped afterwards."""
    redis = RedisServer(workdir / "redis").start()
    proxies = [ProxyServer(redis, workdir / name, env=env,
                           extra_args=(extra_args or {}).get(name), environ=dict(environ or {}))
               for name in names]
    try:
        for proxy in proxies:
            proxy.start()
        proxies[0].push(FLAGS_FILE.read_bytes())
        for proxy in proxies[1:]:
            proxy.wait_version(1)
        yield redis, proxies
    finally:
        for proxy in proxies:
            try:
                proxy.stop()
            except Exception:
                proxy.kill()
        redis.stop()


def admin_keys(proxies: list[ProxyServer], env: str,
               roles: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """An admin key per name with its roles, known to every replica; name -> raw key."""
    made = {name: keys.create(proxies[0].redis_client, env, "admin", name,
                              roles=tuple(held))[0] for name, held in roles.items()}
    known_everywhere(proxies, made.values())
    return made


def known_everywhere(proxies: list[ProxyServer], raws: Iterable[str]) -> None:
    """Wait until every replica takes every key (they learn keys from flagedge:events)."""
    for proxy in proxies:
        for raw in raws:
            wait_until(lambda p=proxy, k=raw: p.key_works(k), timeout=10,
                       what="key on proxy")


# htmx fires htmx:afterRequest once it has swapped the answer in; Playwright's response event
# comes before htmx has even seen the answer. Every UI page logs the requests htmx has
# finished (new_page adds this to its context), so a test waits for the swap of its own
# request instead of racing it (the page's other requests, reloads on flag-changed, finish
# on their own schedule). It counts the live regions' ``sse:changed`` triggers too.
HTMX_DONE_LOG = """window.__htmxDone = []; window.__sseChanged = 0;
document.addEventListener('htmx:afterRequest', e => { window.__htmxDone.push(
  e.detail.requestConfig.verb + ' ' + e.detail.pathInfo.requestPath); });
document.addEventListener('sse:changed', () => { window.__sseChanged += 1; });"""


def htmx_post(page: Any, selector: str, path_end: str) -> Any:
    """Click a control, wait for its htmx POST's answer and for htmx to have swapped it into
    the page; the answer (its status) is returned."""
    done = page.evaluate("() => window.__htmxDone.length")
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith(path_end)) as answer:
        page.click(selector)
    page.wait_for_function("([n, end]) => window.__htmxDone.slice(n).some("
                           "p => p.startsWith('post ') && p.endsWith(end))", arg=[done, path_end])
    return answer.value


def live_reload(page: Any, region: str, path: str) -> None:
    """Reload the live ``region`` as a ``changed`` event from the stream does, and wait until
    htmx has swapped the answer of its ``GET path`` in."""
    done = page.evaluate("() => window.__htmxDone.length")
    page.evaluate("r => htmx.trigger(r, 'sse:changed')", region)
    page.wait_for_function("([n, p]) => window.__htmxDone.slice(n).includes('get ' + p)",
                           arg=[done, path])


class HeldReload:
    """A live region's reload held at the network: ``start`` asks ``region`` to reload (as a
    ``changed`` event does) and waits until its htmx GET, matched by the route ``pattern``, is
    out; its answer is read from the server at once, so it shows the state before whatever
    the test does next. ``release`` lets that older answer through. Other requests pass."""

    def __init__(self, page: Any, pattern: str):
        self.page = page
        self.held: list[tuple[Any, Any]] = []  # (route, the answer read when it was held)
        page.route(pattern, self._route)

    def _route(self, route: Any) -> None:
        request = route.request
        if request.method == "GET" and request.headers.get("hx-request") and not self.held:
            self.held.append((route, route.fetch()))
        else:
            route.continue_()

    def start(self, region: str, timeout_s: float = 10.0) -> None:
        self.page.evaluate("r => htmx.trigger(r, 'sse:changed')", region)
        deadline = time.monotonic() + timeout_s
        while not self.held and time.monotonic() < deadline:
            self.page.wait_for_timeout(10)  # lets Playwright run the route handler
        assert self.held, f"{region}'s reload never reached the network"

    def release(self) -> None:
        route, older = self.held[0]
        # The page may have aborted it meanwhile (hx-sync): nobody waits for its answer then.
        with contextlib.suppress(PlaywrightError):
            route.fulfill(response=older)
