"""HotMetrics.prune and the scrape-time filter: a deleted flag's or environment's series go,
from this worker's counters and from other (even exited) workers' snapshot files."""

from __future__ import annotations

import orjson
from prometheus_client.exposition import generate_latest

from proxy.api.metrics import Metrics
from proxy.model import Change, FlagSet
from proxy.store import Store


def publish(store: Store, env: str, flags: list[str], version: int) -> None:
    old = store.get(env)
    gone = frozenset(old.flags) - set(flags) if old else frozenset()
    store.publish(env, FlagSet(flags=dict.fromkeys(flags), version=version, epoch="x"),  # type: ignore[arg-type]
                  Change(env=env, version=version, deleted=gone))


def test_prune_on_change_and_on_env_removal(tmp_path):
    store = Store()
    publish(store, "e", ["a", "b"], 1)
    publish(store, "o", ["c"], 1)
    metrics = Metrics(store, tmp_path)
    hot = metrics.hot
    for env, name in (("e", "a"), ("e", "b"), ("o", "c")):
        hot.count_exposures(env, ((name, "on", "STATIC"),))
    dead_worker = hot.snapshot()  # a worker that exited before the deletions
    (tmp_path / "worker-999999.json").write_bytes(orjson.dumps(dead_worker))
    old_slot = hot.exposure_slot("e", "b", "on", "STATIC")

    publish(store, "e", ["a"], 2)
    store.remove("o")
    assert set(hot.exposures) == {("e", "a", "on", "STATIC")}
    text = generate_latest(metrics.registry).decode()
    assert 'flag="a"' in text and 'flag="b"' not in text and 'env="o"' not in text
    assert 'flagedge_evaluations_total{env="e",flag="a",reason="STATIC",variant="on"} 2.0' in text

    publish(store, "e", ["a", "b"], 3)  # b again: a fresh series from zero
    assert hot.exposure_slot("e", "b", "on", "STATIC") != old_slot
    hot.count_exposures("e", (("b", "on", "STATIC"),))
    assert hot.exposures[("e", "b", "on", "STATIC")] == 1
