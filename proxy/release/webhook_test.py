"""A test delivery (DESIGN §10, issue 25's "test delivery"): one signed message to one webhook,
now, so whoever adds a webhook sees whether the receiver takes it before a real change is
made. Synchronous (the admin API runs it in a worker thread); the same SSRF check, the same
Standard Webhooks signature and format as real deliveries (``notify.Notifier.deliver``), no
retries and nothing stored: the answer is the result."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from proxy.release import messages, webhooks
from proxy.release.webhooks import UnsafeURL

TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class TestDelivery:
    webhook: str
    delivered: bool  # the receiver answered 2xx
    status: int | None  # its HTTP status; None when no answer came
    error: str  # why not, in words ("" when delivered)
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "delivered": self.delivered, "status": self.status,
                "error": self.error, "ms": round(self.ms, 1)}


def send_test(client: Any, env: str, hook_id: str, by: str,
              timeout: float = TIMEOUT_S) -> TestDelivery:
    """POST a test message to the webhook ``hook_id`` of ``env``; LookupError if unknown."""
    hook = next((h for h in webhooks.list_webhooks(client, env) if h.id == hook_id), None)
    if hook is None:
        raise LookupError(f"no webhook {hook_id} in environment {env}")
    message = messages.test_message(env, hook.id, by, time.time())
    body = messages.body(message, hook.format)
    started = time.perf_counter()
    try:
        webhooks.check_url(hook.url, hook.allow_private)
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as http:
            response = http.post(hook.url, content=body, headers=webhooks.headers(
                hook.secret, f"msg_test_{secrets.token_hex(8)}", body))
    except (UnsafeURL, OSError, httpx.HTTPError, ValueError) as exc:
        return TestDelivery(hook.id, False, None, f"{type(exc).__name__}: {exc}"[:500],
                            (time.perf_counter() - started) * 1000)
    ms = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    return TestDelivery(hook.id, ok, response.status_code,
                        "" if ok else f"HTTP {response.status_code}", ms)
