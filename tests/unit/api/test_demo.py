"""The demo page routes: redirect, config injection, bundle serving, missing-bundle error."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from proxy.api.demo import CONFIG_PLACEHOLDER, demo_routes, render_page

ROOT = Path(__file__).resolve().parents[3]


def make_web_dir(tmp_path: Path, built: bool = True) -> Path:
    web = tmp_path / "web"
    (web / "dist").mkdir(parents=True)
    (web / "index.html").write_text(f"<html><head>{CONFIG_PLACEHOLDER}</head>"
                                    '<body><script src="dist/app.js"></script></body></html>')
    if built:
        (web / "dist" / "app.js").write_text("console.log('demo')")
    return web


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


async def test_page_injects_config_and_serves_bundle(tmp_path: Path) -> None:
    app = Starlette(routes=demo_routes(make_web_dir(tmp_path), {"env": "dev", "x": "</script>"}))
    async with client_for(app) as client:
        r = await client.get("/demo?user=alice")
        assert r.status_code == 308
        assert r.headers["location"] == "/demo/?user=alice"
        r = await client.get("/demo/")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        # The value that would close the script element is escaped.
        assert "</script>\"" not in r.text
        start = r.text.index('type="application/json">') + len('type="application/json">')
        raw = r.text[start:r.text.index("</script>", start)]
        assert orjson.loads(raw) == {"env": "dev", "x": "</script>"}
        r = await client.get("/demo/dist/app.js")
        assert r.status_code == 200
        assert r.text == "console.log('demo')"
        assert (await client.get("/demo/dist/../index.html")).status_code == 404


async def test_missing_bundle_is_a_clear_503(tmp_path: Path) -> None:
    app = Starlette(routes=demo_routes(make_web_dir(tmp_path, built=False)))
    async with client_for(app) as client:
        r = await client.get("/demo/")
        assert r.status_code == 503
        assert "npm run build" in r.text
        assert (await client.get("/demo/dist/app.js")).status_code == 404


def test_the_real_page_has_the_placeholder() -> None:
    html = (ROOT / "examples" / "web" / "index.html").read_text()
    assert '"a": 1' not in html
    assert '{"a":1}' in render_page(html, {"a": 1})


def test_render_page_refuses_a_page_without_placeholder() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        render_page("<html></html>", {})
