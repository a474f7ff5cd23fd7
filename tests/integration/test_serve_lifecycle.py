"""`flagedge serve` as a process: a clean SIGTERM exits 0 (one process and ``--workers 2``),
a crash does not; a client that disconnects half-way through its body is no server error."""

from __future__ import annotations

import socket
import subprocess
import sys

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

