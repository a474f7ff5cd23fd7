"""proxy.ui.routes in process, in file mode (no Redis: the revocation list is this process's):
sign-in, the cookie's attributes, CSRF on every POST, sign-out, a revoked key, the banner."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.config import Settings
from tests.unit.ofrep_app import ENV, App
from tests.unit.ui import inproc

pytestmark = pytest.mark.asyncio


async def test_sign_in_sets_a_strict_httponly_cookie_without_the_key(tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        answer = await inproc.sign_in(client, app.keys["admin"])
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
        cookie = next(c for c in answer.headers.get_list("set-cookie")
                      if c.startswith("flagedge_ui="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert "Max-Age=28800" in cookie
        assert app.keys["admin"] not in cookie
        page = await client.get("/ui/flags")
        assert page.status_code == 200
        assert 'data-flag-key="bool-flag"' in page.text
        assert app.keys["admin"] not in page.text
        assert 'data-testid="readonly-banner"' in page.text  # file mode: read-only


async def test_a_wrong_key_a_server_key_or_no_form_token_is_refused(tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        wrong = await inproc.sign_in(client, "fe_admin_nope")
        assert wrong.status_code == 401 and "not a valid admin key" in wrong.text
        assert "fe_admin_nope" not in wrong.text
        server = await inproc.sign_in(client, app.keys["server"])
        assert server.status_code == 403
        forged = await client.post("/ui/signin", data={"key": app.keys["admin"]})
        assert forged.status_code == 403
        assert "flagedge_ui=" not in forged.headers.get("set-cookie", "")


async def test_signing_out_needs_the_csrf_token_and_ends_the_session(tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await inproc.sign_in(client, app.keys["admin"])
        page = await client.get("/ui/")
        cookie = client.cookies["flagedge_ui"]
        refused = await client.post("/ui/signout", data={})
        assert refused.status_code == 403
        assert (await client.get("/ui/")).status_code == 200  # still signed in
        done = await client.post("/ui/signout", data={"csrf": inproc.csrf_in(page.text)})
        assert done.status_code == 303
        # The same cookie, replayed, no longer opens anything.
        client.cookies.set("flagedge_ui", cookie, path="/ui")
        again = await client.get("/ui/")
        assert again.status_code == 303 and "/ui/signin" in again.headers["location"]


async def test_a_revoked_key_ends_its_sessions(tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        await inproc.sign_in(client, app.keys["admin"])
        assert (await client.get("/ui/")).status_code == 200
        admin_hash = next(h for h, r in app.ring.records().items() if r.kind == "admin")
        app.ring.remove(admin_hash)
        gone = await client.get("/ui/")
        assert gone.status_code == 303 and gone.headers["location"].endswith("notice=revoked")


async def test_pages_without_a_session_go_to_sign_in(tmp_path: Path) -> None:
    async with inproc.client(inproc.file_mode_app(tmp_path)) as client:
        for path in ("/ui/", "/ui/flags"):
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/signin"


async def test_with_an_admin_port_the_ui_is_there_only(tmp_path: Path) -> None:
    rules = tmp_path / "flags.json"
    rules.write_text("{}")
    app = App(Settings(env=ENV, flags=rules, admin_port=9091))
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge:9091") as admin:
        assert (await admin.get("/ui/signin")).status_code == 200
    async with httpx.AsyncClient(transport=transport, base_url="http://edge:8080") as main:
        assert (await main.get("/ui/signin")).status_code == 404


async def test_an_admin_refusal_reads_as_words_and_paths() -> None:
    from proxy.api import errors
    from proxy.api.admin_calls import admin_error
    from proxy.ui.routes import outcome

    refused = outcome(admin_error(422, "INVALID_DOCUMENT", "1 problem",
                                  problems=[{"path": "flags.a.state", "message": "bad"}]))
    assert (refused.ok, refused.status, refused.error) == (False, 422, "1 problem")
    assert refused.problems == ({"path": "flags.a.state", "message": "bad"},)
    done = outcome(errors.json_response({"status": "written"}, 202))
    assert (done.ok, done.data) == (True, {"status": "written"})


async def test_notification_links_lead_to_the_signed_in_environments_pages(
        tmp_path: Path) -> None:
    app = inproc.file_mode_app(tmp_path)
    async with inproc.client(app) as client:
        assert (await client.get(f"/ui/envs/{ENV}/requests/7")).headers["location"] == (
            "/ui/signin")  # not signed in: sign in first
        await inproc.sign_in(client, app.keys["admin"])
        to_request = await client.get(f"/ui/envs/{ENV}/requests/7")
        assert (to_request.status_code, to_request.headers["location"]) == (
            303, "/ui/requests/7")
        to_version = await client.get(f"/ui/envs/{ENV}/history", params={"version": "3"})
        assert to_version.headers["location"] == "/ui/history#version-3"
        other = await client.get("/ui/envs/prod/requests/7")
        assert other.status_code == 403
        assert f"This link is for environment prod; you are signed in to {ENV}" in other.text
