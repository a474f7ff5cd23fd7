"""/readyz answers a status and a short fixed reason; the sources' own words (Redis errors
with addresses) reach the log only (issue 20)."""

from __future__ import annotations

import logging

from proxy.api.health import Health
from proxy.model import Change, FlagSet
from proxy.store import Store

RAW = "Error 111 connecting to 10.1.2.3:6379. Connection refused."


def store_with(*envs: str) -> Store:
    store = Store()
    for env in envs:
        store.publish(env, FlagSet(flags={}, version=1),
                      Change(env=env, version=1, reset=True))
    return store


def test_reasons_are_short_phrases_and_details_go_to_the_log(caplog):
    store = store_with("a", "b")
    up = {"ok": True}
    health = Health(store, lambda: up["ok"], source="redis")
    assert health.state() == (200, {"status": "ok"})
    up["ok"] = False
    store.set_status("*", connected=False, degraded_reason=f"redis unreachable: {RAW}",
                     error=RAW)
    for env in ("a", "b"):
        store.set_status(env, connected=False, degraded_reason=f"{RAW}; serving version 1")
    with caplog.at_level(logging.WARNING, logger="flagedge.health"):
        status, body = health.state()
        health.state()  # logged once per change, not per probe
    assert (status, body) == (200, {"status": "degraded",
                                    "reason": "redis unreachable; stale: 2 environments"})
    assert len([r for r in caplog.records if RAW in r.getMessage()]) == 1
    store.set_status("b", connected=True)
    up["ok"] = True
    store.set_status("*", connected=True)
    assert health.state()[1]["reason"] == "stale: 1 environment"


def test_not_ready_says_which_source_without_its_error():
    store = Store()
    store.set_status("*", connected=False, degraded_reason=RAW, error=RAW)
    assert Health(store, lambda: False, source="redis").state() == (
        503, {"status": "unavailable", "reason": "redis unreachable: no rules loaded yet"})
