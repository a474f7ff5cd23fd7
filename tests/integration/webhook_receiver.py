"""A real HTTP receiver for webhook tests (a local server in a thread, on loopback), and a
Standard Webhooks verifier written from the specification (standardwebhooks.com, "Verifying
webhooks"): signed content ``{id}.{timestamp}.{body}``, HMAC-SHA256 keyed with the
base64-decoded part of a ``whsec_`` secret, ``webhook-signature`` a space-separated list of
``v1,<base64>``, and a timestamp within five minutes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

TOLERANCE = 300  # seconds, as the spec's reference libraries


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((now or time.time()) - int(ts)) > TOLERANCE:
        return False
    key = (base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_")
           else secret.encode())
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """``fail_first``: answer 500 to that many requests first; ``always_fail``: always 500.
    ``requests``: every request received (including those answered 500)."""

    port: int = 0
    fail_first: int = 0
    always_fail: bool = False
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    failing = receiver.always_fail or receiver.fail_first > 0
                    receiver.fail_first = max(0, receiver.fail_first - 1)
                    status = 500 if failing else 200
                    receiver.requests.append(Received(
                        {k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.status == 200]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def of_type(self, kind: str) -> list[Received]:
        return [r for r in self.accepted() if r.json["type"] == kind]
