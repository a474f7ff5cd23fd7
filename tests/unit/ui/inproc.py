"""The UI in process, in file mode (no Redis): the app over a rules file, an httpx client on
its ASGI transport, and a signed-in session, as the unit tests of each page use them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from proxy.config import Settings
from tests.unit.ofrep_app import DOC, ENV, App


def file_mode_app(tmp_path: Path, doc: dict[str, Any] | None = DOC) -> App:
    """The app serving ``doc`` with ``--flags`` set (the file itself is never read here)."""
    rules = tmp_path / "flags.json"
    rules.write_text("{}")
    return App(Settings(env=ENV, flags=rules), doc=doc)


def client(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app),
                             base_url="http://edge.example")


def csrf_in(html: str) -> str:
    """The form's CSRF token (the hidden ``csrf`` field)."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/ui/signin")
    return await client.post("/ui/signin", data={"key": key, "csrf": csrf_in(form.text)})
