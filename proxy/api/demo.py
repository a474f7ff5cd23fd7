"""The demo page (``flagedge serve --demo``): ``examples/web`` served at ``/demo/``.

The page is the OpenFeature web SDK with the OFREP web provider, bundled by esbuild into
``examples/web/dist/app.js`` (build output, not committed: ``make e2e`` or
``cd examples/web && npm ci && npm run build`` makes it). Being served by the proxy itself,
the page is same-origin with the OFREP API, so it needs no CORS setup. It takes its client
key and user from the query string (``/demo/?key=KEY&user=alice``), or from the JSON this
module injects into ``<script id="flagedge-config">``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

log = logging.getLogger("flagedge.demo")

CONFIG_PLACEHOLDER = '<script id="flagedge-config" type="application/json">{}</script>'
# The page carries a key in its URL: keep it out of caches and Referer headers.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff"}


def default_web_dir() -> Path:
    """``FLAGEDGE_DEMO_DIR``, else ``examples/web`` of the checkout this package runs from."""
    override = os.environ.get("FLAGEDGE_DEMO_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "examples" / "web"


def render_page(html: str, page_config: dict[str, Any]) -> str:
    """Put ``page_config`` into the page's config script; ``</`` is escaped so no value can
    close the script element."""
    data = orjson.dumps(page_config).decode().replace("</", "<\\/")
    injected = f'<script id="flagedge-config" type="application/json">{data}</script>'
    if CONFIG_PLACEHOLDER not in html:
        raise ValueError("demo index.html lacks the flagedge-config placeholder")
    return html.replace(CONFIG_PLACEHOLDER, injected, 1)


def demo_routes(web_dir: Path | None = None,
                page_config: dict[str, Any] | None = None) -> list[BaseRoute]:
    """Routes for ``/demo``, ``/demo/`` (the page) and ``/demo/dist/*`` (the bundle)."""
    web_dir = Path(web_dir or default_web_dir())
    dist_dir = web_dir / "dist"
    config = dict(page_config or {})
    missing = (f"The demo bundle is not built ({dist_dir / 'app.js'} is missing).\n"
               "Build it with `python -m tests.e2e.setup_browser` (or `make e2e`), or\n"
               f"`cd {web_dir} && npm ci && npm run build`.\n")
    if not (dist_dir / "app.js").exists():
        log.warning("demo enabled but the bundle is not built: %s", dist_dir / "app.js")

    async def to_slash(request: Request) -> Response:
        # The page loads `dist/app.js` relative to itself, so it must live at /demo/.
        query = request.url.query
        return RedirectResponse("/demo/" + ("?" + query if query else ""), status_code=308)

    async def page(request: Request) -> Response:
        if not (dist_dir / "app.js").exists():
            return PlainTextResponse(missing, status_code=503, headers=PAGE_HEADERS)
        # Read per request: the file is small and a rebuilt page shows without a restart.
        html = (web_dir / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(render_page(html, config), headers=PAGE_HEADERS)

    return [
        Route("/demo", to_slash, methods=["GET", "HEAD"]),
        Route("/demo/", page, methods=["GET", "HEAD"]),
        Mount("/demo/dist", app=StaticFiles(directory=dist_dir, check_dir=False),
              name="demo-dist"),
    ]


def mount(rt: Any) -> list[BaseRoute]:
    """The routes for ``create_app`` (``serve --demo``). The page learns the environment and
    whether it needs a key; the key itself comes from the user (query string)."""
    settings = rt.settings
    log.info("demo page at /demo/ (env %s)", settings.env)
    return demo_routes(page_config={"env": settings.env, "authRequired": not settings.no_auth})
