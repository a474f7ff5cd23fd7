"""`flagedge serve` as a process: a clean SIGTERM exits 0 (one process and ``--workers 2``),
a crash does not; a client that disconnects half-way through its body is no server error."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import ROOT
from tests.integration.streams_support import DOC, metric
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workers", [1, 2])
def test_a_clean_sigterm_exits_0(proxy_factory, workers):
    server = proxy_factory(extra_args=["--workers", str(workers)])
    server.push(DOC)
    with server.client(None) as c:
        assert c.get("/healthz").status_code == 200
    code = server.stop()
    assert code == 0, server.logs()
    logs = server.logs()
    assert "Traceback" not in logs, logs
    marker = "Finished server process" if workers == 1 else "Stopping parent process"
    assert marker in logs, logs


def test_a_crash_still_exits_non_zero(tmp_path):
    flags = tmp_path / "flags.json"
    flags.write_bytes(orjson.dumps(DOC))
    with socket.socket() as taken:  # the port is bound already: uvicorn cannot start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--flags", str(flags)],
            cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode not in (0, None), proc.stderr.decode(errors="replace")


def _many_flags(n: int) -> dict[str, Any]:
    rule = {"if": [{"in": [{"var": "country"}, ["DE", "FR", "NL"]]}, "on",
                   {"fractional": [["on", 50], ["off", 50]]}]}
    return {"flags": {f"flag-{i:03d}": {"state": "ENABLED", "defaultVariant": "off",
                                        "variants": {"on": True, "off": False},
                                        "targeting": rule} for i in range(n)}}


def test_a_restarted_process_answers_with_its_rules_from_its_first_answer(proxy_factory):
    """The port opens once the first load is done: a client reconnecting the moment a
    restarted process listens (a browser's EventSource, a provider) gets the rules, not a
    503 "not loaded yet". Thirty environments of 100 flags, loaded first (in name order),
    make that load long enough that a port opened before it is answered 503 every time."""
    server = proxy_factory(env="zz")
    for i in range(30):
        server.push(_many_flags(100), env=f"a{i:02d}")
    server.push(DOC)
    key = server.create_key("client")
    server.stop()

    server.start(wait="")
    answer = wait_until(lambda: _bulk_once(server.url, key), timeout=30, interval=0.005,
                        what="the restarted process to answer")
    assert answer.status_code == 200, (answer.status_code, answer.text)
    assert set(answer.json()["flags"][0]) >= {"key", "value"}
    assert "resync envs=31" in server.logs()


def _bulk_once(url: str, key: str) -> httpx.Response | None:
    try:
        return httpx.post(f"{url}/ofrep/v1/evaluate/flags", json={"context": {
            "targetingKey": "u1"}}, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    except httpx.ConnectError:  # not listening yet
        return None


def _half_a_body(port: int, path: str, headers: str = "") -> None:
    """Headers announcing 1000 bytes, 10 of them, then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: 1000\r\n{headers}\r\n").encode() + b'{"context"')


@pytest.mark.parametrize("path", ["/ofrep/v1/evaluate/flags", "/v1/explain/f"])
def test_a_client_gone_mid_body_is_no_server_error(proxy_server, path):
    proxy_server.push(DOC)
    key = proxy_server.create_key("server")
    with proxy_server.client(key) as c:
        for _ in range(3):
            _half_a_body(proxy_server.port, path, f"Authorization: Bearer {key}\r\n")
        route = path if path.startswith("/ofrep") else "/v1/explain/{key:path}"

        def counted(status: str | None = None) -> float:
            labels = {"route": route} | ({"status": status} if status else {})
            return metric(c.get("/metrics").text, "flagedge_http_requests_total", **labels)

        wait_until(lambda: counted() >= 3, timeout=10, what="the 3 requests counted")
        # Counted as 499 (nginx's "client closed request"), not as server errors...
        assert (counted("500"), counted("499")) == (0, 3)
        # ...and the server still answers.
        assert c.post("/ofrep/v1/evaluate/flags", json={}).status_code == 200
    assert proxy_server.stop() == 0
    logs = proxy_server.logs()
    assert "Traceback" not in logs and "Exception in ASGI" not in logs, logs
    assert " 500" not in logs, logs

