"""A purchase on the demo page is tracked to flagedge (examples/web/src/track.js, since the
OFREP web provider has no ``track``) and counts as a conversion of the user's stored
experiment assignment: ``flagedge insights experiment`` reads it back from Redis."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.pageutil import wait_ready
from tests.redis_server import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]


def converted(stack: Stack) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "proxy", "insights", "experiment",
                          "search-ranking", "--event", "purchase", "--env", stack.env,
                          "--redis", stack.redis.url, "--json"], capture_output=True)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr.decode()[-2000:]}"
    return {v["variant"]: v["converted"] for v in orjson.loads(out.stdout)["variants"]}


def test_a_purchase_is_tracked_to_the_users_experiment_arm(stack: Stack, open_page: Any) -> None:
    user = "buyer-1"  # no internal email: the split assigns this user an arm
    page = open_page(stack.demo_url(user), user)
    wait_ready(page)
    arm = page.get_by_test_id("experiment-arm").get_attribute("data-arm")
    assert arm, "the experiment gave no arm"
    pay = page.get_by_test_id("pay-button")
    assert pay.is_enabled()
    pay.click()
    page.wait_for_function(
        "document.querySelector('[data-testid=\"tracked-count\"]').textContent === '1'",
        timeout=10_000)
    wait_until(lambda: converted(stack).get(arm) == 1, timeout=30,
               what="the purchase attributed to the user's arm at a flush")
    assert sum(converted(stack).values()) == 1
