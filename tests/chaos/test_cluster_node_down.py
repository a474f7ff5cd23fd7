"""Redis Cluster with one master down (issue 20): environments whose slots live on the other
masters keep following pushes; the ones on the dead node are reported degraded and keep
their last good rules, then catch up when it returns.

The cluster runs with ``cluster-require-full-coverage no`` (what the README asks of a Cluster
that should serve its healthy slots while a master without a replica is down; with the
default ``yes`` Redis itself refuses every slot then).
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.storage import layout
from proxy.storage.url import sync_client
from tests.chaos.conftest import until
from tests.chaos.test_failover import ENVS, _cluster_ok, _node_of, cluster, flag_doc  # noqa: F401
from tests.integration.test_sources_topologies import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GLOBAL_KEYS = (layout.ENVS, layout.KEYS, layout.EVENTS, layout.SECRET)


async def test_one_master_down_leaves_the_other_slots_following(cluster, proxy_factory):  # noqa: F811
    seed = cluster[0]
    for node in cluster:
        assert cli("-p", str(node.port), "config", "set", "cluster-require-full-coverage",
                   "no").returncode == 0
    writer = sync_client(seed.url, cluster=True)
    for env in ENVS:
        publisher.push(writer, env, Document.from_json(flag_doc(1)))
    # A master holding environments but none of the keys every reload reads.
    holding_globals = {writer.get_node_from_key(k).port for k in GLOBAL_KEYS}
    victim = next(s for s in cluster[1:] if s.port not in holding_globals
                  and any(_node_of(writer, cluster, e) is s for e in ENVS))
    on_victim = [e for e in ENVS if _node_of(writer, cluster, e) is victim]
    elsewhere = [e for e in ENVS if e not in on_victim]
    assert on_victim and elsewhere
    writer.close()

    server = proxy_factory(redis=None, extra_args=["--redis", seed.url, "--cluster"],
                           wait="readyz")
    client = server.client()
    try:
        await until(lambda: _versions(client, {e: 1 for e in ENVS}), 10, "every env loaded")
        victim.kill()
        await until(lambda: all(f"redis node for environment {e} unreachable" in server.logs()
                                for e in on_victim), 15, "the dead node's environments reported")
        push_version_2(seed.url, elsewhere)
        # While the node is still down: the healthy slots' pushes are applied.
        await until(lambda: _versions(client, {**{e: 2 for e in elsewhere},
                                               **{e: 1 for e in on_victim}}),
                    10, "healthy slots followed with a master down")
        assert client.get("/readyz").json()["status"] == "degraded"
        assert not any(f"redis node for environment {e} unreachable" in server.logs()
                       for e in elsewhere)

        await asyncio.to_thread(victim.start)  # same port, AOF and nodes.conf: it rejoins
        await until(lambda: all(_cluster_ok(s) for s in cluster), 20, "cluster ok again")
        push_version_2(seed.url, on_victim)
        await until(lambda: _versions(client, {e: 2 for e in ENVS}), 15,
                    "the returned node's environments followed again")
        await until(lambda: _ok(client), 10, "readyz ok")
    finally:
        client.close()
    assert "other environments keep following" in server.logs()


def push_version_2(seed_url: str, envs: list[str]) -> None:
    writer = sync_client(seed_url, cluster=True)
    try:
        for env in envs:
            assert publisher.push(writer, env, Document.from_json(flag_doc(2))).version == 2
    finally:
        writer.close()


def _versions(client, wanted: dict[str, int]) -> bool:
    envs = client.get("/readyz").json().get("envs", {})
    return all(envs.get(e) == v for e, v in wanted.items())


def _ok(client) -> bool:
    return client.get("/readyz").json().get("status") == "ok"

