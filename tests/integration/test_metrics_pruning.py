"""Series of deleted flags and environments leave /metrics (each worker's counters and the
per-worker snapshot files alike); the others keep counting."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_cli_publish import flagedge
from tests.redis_server import wait_until

pytestmark = pytest.mark.integration


def flag(variant: str) -> dict:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": variant}


def series(text: str) -> set[str]:
    """The label sets of the per-flag and per-env series in a scrape."""
    names = ("flagedge_evaluations_total{", "flagedge_ruleset_version{",
             "flagedge_ruleset_age_seconds{", "flagedge_source_connected{",
             "flagedge_source_degraded{")
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith(names)}


def evaluations(text: str, env: str, name: str) -> float:
    prefix = f'flagedge_evaluations_total{{env="{env}",flag="{name}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def test_deleted_flag_and_env_series_are_pruned(proxy_factory):
    server = proxy_factory(extra_args=["--workers", "2"])
    server.push({"flags": {"a": flag("on"), "b": flag("off")}})
    server.push({"flags": {"c": flag("on")}}, env="other")
    keys = {env: server.create_key(env=env) for env in ("test", "other")}

    def evaluate(env: str, n: int) -> None:
        for _ in range(n):  # a new connection each time, so both workers take some
            headers = {"Authorization": f"Bearer {keys[env]}"}
            r = httpx.post(f"{server.url}/ofrep/v1/evaluate/flags", json={"context": {}},
                           headers=headers)
            assert r.status_code == 200, r.text

    def scrapes_agree(check) -> bool:  # whichever worker answers: every scrape passes
        return all(check(httpx.get(f"{server.url}/metrics").text) for _ in range(8))

    def counts(text: str) -> tuple[float, float, float]:
        return (evaluations(text, "test", "a"), evaluations(text, "test", "b"),
                evaluations(text, "other", "c"))

    evaluate("test", 10)
    evaluate("other", 10)
    # create_key's own check requests count too: wait until both workers' snapshots are in
    # (eight scrapes in a row give the same counts) rather than expecting exact numbers.
    settled: list[tuple[float, float, float]] = []

    def stable(text: str) -> bool:
        settled.append(counts(text))
        return settled[-1] == settled[0] and min(settled[-1]) >= 10

    def all_stable() -> bool:
        settled.clear()
        return scrapes_agree(stable)

    wait_until(all_stable, timeout=10, what="both workers' exposures")
    a_before = settled[0][0]
    before = series(httpx.get(f"{server.url}/metrics").text)
    assert any('env="other"' in s for s in before)
    assert any('flag="b"' in s for s in before)

    server.push({"flags": {"a": flag("on")}})  # b deleted
    assert flagedge("envs", "delete", "other", "--yes", url=server.redis.url).returncode == 0
    wait_until(lambda: "other" not in server.versions(), timeout=10, what="env deleted")
    evaluate("test", 5)

    def pruned(text: str) -> bool:
        now = series(text)
        return (not any('env="other"' in s or 'flag="b"' in s for s in now)
                and evaluations(text, "test", "a") == a_before + 5)

    wait_until(lambda: scrapes_agree(pruned), timeout=10, what="pruned series")
    after = series(httpx.get(f"{server.url}/metrics").text)
    kept = {s for s in before if 'env="other"' not in s and 'flag="b"' not in s}
    assert kept <= after  # the others are all still there
