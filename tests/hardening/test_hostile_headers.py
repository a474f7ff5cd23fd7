"""Hostile headers and query parameters on a real server: resume ids from the future or not
numbers at all, absurd ETags and version parameters, oversized or binary auth headers. No
5xx, no hang; a stream opened with a nonsense ``Last-Event-ID`` starts with a fresh snapshot
of the current version."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.hardening.conftest import BULK, env_doc, http, ofrep_error_body

pytestmark = pytest.mark.integration

RESUME_IDS = ["99999999999999999999999999", "-1", "1e5", "\u0663", "1" * 5000, "",
              "NaN", "0x10", "1.0", "1\x00"]


@pytest.fixture
def served(proxy_factory):
    server = proxy_factory(env="alpha")
    version = server.push(env_doc("alpha"), env="alpha")
    return server, server.create_key("server", env="alpha"), version


def first_frames(c: httpx.Client, path: str, headers: dict[str, str], params: dict) -> tuple[int, str]:
    with c.stream("GET", path, headers=headers, params=params) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.text
        text = ""
        for chunk in r.iter_text():
            text += chunk
            if "\n\n" in text.split("retry:", 1)[-1] and ("data:" in text or "id:" in text):
                break
        return 200, text


def test_nonsense_resume_ids_get_a_fresh_snapshot(served) -> None:
    server, key, version = served
    with http(server, key, timeout=5) as c:
        for path, params in (("/v1/stream/rules", {}), ("/v1/stream/evaluated", {}),
                             ("/ofrep/v1/events", {})):
            for rid in RESUME_IDS:
                for how in ("header", "param"):
                    headers, p = {}, dict(params)
                    if how == "header":
                        try:
                            headers["Last-Event-ID"] = rid
                            c.build_request("GET", "/", headers=headers)
                        except (httpx.LocalProtocolError, UnicodeEncodeError):
                            continue  # not sendable as a header
                    else:
                        p["lastEventId"] = rid
                    start = time.monotonic()
                    try:
                        status, text = first_frames(c, path, headers, p)
                    except httpx.LocalProtocolError:
                        continue
                    assert time.monotonic() - start < 3.0, (path, rid)
                    assert status == 200, (path, repr(rid)[:40], status, text[:200])
                    if path != "/ofrep/v1/events":
                        assert "event: put" in text, (path, repr(rid)[:40], text[:300])
                    assert f"id: {version}" in text, (path, repr(rid)[:40], text[:300])


def test_absurd_etags_and_version_parameters(served) -> None:
    server, key, _ = served
    with http(server, key, timeout=5) as c:
        cases = [
            ({"If-None-Match": "W/" * 10_000}, {}),
            ({"If-None-Match": ",".join(['"x"'] * 2_000)}, {}),
            ({"If-None-Match": "*"}, {}),
            ({}, {"flagConfigEtag": "9" * 5000}),
            ({}, {"flagConfigEtag": "-5"}),
            ({}, {"flagConfigLastModified": "inf"}),
            ({}, {"flagConfigLastModified": "nan"}),
            ({}, {"flagConfigLastModified": "1e309"}),
            ({}, {"sseEtag": "999999", "sseLastModified": "-inf"}),
        ]
        for headers, params in cases:
            start = time.monotonic()
            r = c.post(BULK, json={}, headers=headers, params=params)
            assert r.status_code in (200, 304), (headers.keys(), params, r.status_code, r.text[:200])
            assert time.monotonic() - start < 2.0, (headers.keys(), params)
            r = c.get("/v1/rules", headers=headers)
            assert r.status_code in (200, 304), (list(headers), r.status_code)


def test_oversized_and_binary_auth_headers(served) -> None:
    server, key, _ = served
    with httpx.Client(base_url=server.url, timeout=5) as c:
        for headers in (
            {"Authorization": "Bearer " + "k" * 60_000},
            {"X-API-Key": "k" * 60_000},
            {"Authorization": "Bearer " + key + "\x7f"},
            {"Authorization": b"Bearer \xff\xfe\xfd"},
            {"X-API-Key": b"\xe9\xe8" + key.encode()},
            {"Authorization": "bearer"},
            {"Authorization": "Bearer  " + key + "  extra"},
            {"Authorization": "Token " + key},
        ):
            for method, path in (("POST", BULK), ("GET", "/v1/rules"),
                                 ("GET", "/ofrep/v1/events")):
                r = c.request(method, path, headers=headers, json={} if method == "POST" else None)
                assert r.status_code in (400, 401, 431), (list(headers), path, r.status_code)
                if r.status_code == 401:
                    ofrep_error_body(r)
        assert c.post(BULK, json={}, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_wrong_methods_and_odd_paths_get_json_errors(served) -> None:
    server, key, _ = served
    paths = [BULK, f"{BULK}/shared", "/v1/explain/shared", "/v1/rules", "/v1/envs",
             "/ofrep/v1/events", "/v1/stream/rules", "/v1/stream/evaluated",
             "/ofrep/v1/configuration", "/healthz", "/readyz"]
    with http(server, key, timeout=5) as c:
        for path in paths:
            for method in ("PUT", "DELETE", "PATCH", "TRACE"):
                r = c.request(method, path)
                assert r.status_code == 405, (method, path, r.status_code)
                assert ofrep_error_body(r)["errorCode"] == "METHOD_NOT_ALLOWED"
        for key_path in ("%2e%2e%2fv1%2frules", "..%2f..%2fv1%2frules", "%00", "a%0Ab",
                         "shared%2F..", "%C0%AE%C0%AE", "shared/extra"):
            r = c.post(f"{BULK}/{key_path}", json={})
            assert r.status_code == 404, (key_path, r.status_code, r.text[:200])
            assert ofrep_error_body(r)["errorCode"] in ("FLAG_NOT_FOUND", "NOT_FOUND")
            assert "only-in" not in r.text
        for path in ("/v1", "/ofrep", "/ofrep/v1/evaluate", "/v1/rules/extra", "/" + "a" * 5000):
            r = c.get(path)
            assert r.status_code in (404, 405), (path[:40], r.status_code)
            ofrep_error_body(r)
