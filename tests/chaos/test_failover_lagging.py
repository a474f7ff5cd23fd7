"""A Sentinel failover to a lagging replica (issue 20): the master acknowledged version 3, died
before the replica had it, and the promoted replica is at version 2. The next push there is
version 3 again, with other content. Every client must end up with what Redis now holds: the
proxy's state ids name the write, not only its number, so live streams are told, a resume with
the lost write's id gets a snapshot, ``/v1/rules`` does not answer 304 and the OFREP result
cache does not answer with the lost write's results.

Real processes: a master, a replica and a sentinel (tests/chaos/test_failover.py's fixture),
one `flagedge serve` on the redis+sentinel:// URL, httpx(-sse) clients and the in-process
provider (FlagedgeProvider).
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import pytest
from openfeature import api

from proxy.model import id_version
from proxy.provider import FlagedgeProvider
from proxy.release import publisher
from proxy.release.changeset import Document
from proxy.storage import keys
from proxy.storage.url import sync_client
from tests.chaos.conftest import replicated, until
from tests.chaos.test_failover import flag_doc, push_when_possible, sentinel_set  # noqa: F401
from tests.integration.streams_support import Stream, b64_context, data

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def value_of(put: Any) -> int:
    return data(put)["document"]["flags"]["n"]["variants"]["current"]


async def test_failover_to_a_lagging_replica_reaches_every_client(sentinel_set, proxy_factory):  # noqa: F811
    s = sentinel_set
    writer = sync_client(s.url)
    for n in (1, 2):
        publisher.push(writer, "test", Document.from_json(flag_doc(n)), author="chaos")
    ckey, _ = keys.create(writer, "test", "client", "chaos")
    skey, _ = keys.create(writer, "test", "server", "chaos")
    await replicated(writer)  # the replica holds version 2
    server = proxy_factory(redis=None, extra_args=["--redis", s.url], wait="readyz")
    provider = FlagedgeProvider(server.url, skey, init_timeout=10.0, backoff_initial=0.05,
                                backoff_max=0.5)
    await asyncio.to_thread(api.set_provider_and_wait, provider, "lagging")
    in_process = api.get_client("lagging")
    try:
        await _run(s, server, writer, ckey, skey, in_process)
    finally:
        await asyncio.to_thread(api.shutdown)


async def _run(s: Any, server: Any, writer: Any, ckey: str, skey: str, in_process: Any) -> None:
    auth = {"Authorization": f"Bearer {skey}"}
    ctx = b64_context({"targetingKey": "u1"})
    body = b'{"context":{"targetingKey":"u1"}}'  # byte for byte each time: the raw cache
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        def bulk(**params: str) -> Any:
            return http.post("/ofrep/v1/evaluate/flags", content=body, params=params,
                             headers={"Authorization": f"Bearer {ckey}",
                                      "Content-Type": "application/json"})

        async with Stream(http, "/v1/stream/rules", key=skey) as rules, \
                Stream(http, "/ofrep/v1/events", key=ckey) as events, \
                Stream(http, "/v1/stream/evaluated", key=ckey, params={"context": ctx}) as ev:
            assert value_of(await rules.next()) == 2
            await ev.next()
            # The replica stops and its link is cut (what was already in its socket would
            # still reach it); the master acknowledges version 3 alone.
            os.kill(s.replica.proc.pid, signal.SIGSTOP)
            try:
                writer.execute_command("CLIENT", "KILL", "TYPE", "replica")
                lost = publisher.push(writer, "test", Document.from_json(flag_doc(3)),
                                      author="chaos").version
                assert lost == 3
                lost_put = await rules.next()
                lost_id = lost_put.id
                assert id_version(lost_id) == 3
                lost_rules = await http.get("/v1/rules", headers=auth)
                for _ in range(2):  # seen twice: the raw body is now cached too
                    assert (await bulk()).json()["flags"][0]["value"] == 3
                await until(lambda: in_process.get_integer_value("n", 0) == 3, 10,
                            "the in-process provider at the lost write")
                s.master.kill()
            finally:
                os.kill(s.replica.proc.pid, signal.SIGCONT)
            writer.close()
            await until(lambda: s.master_port() == s.replica.port, 30, "replica promoted")
            # Redis now holds version 2: the proxy keeps the served version 3 (degraded) ...
            await until(lambda: "older than the served 3" in server.logs(), 15,
                        "older redis reported")
            # ... until the next push there: version 3 again, another write.
            again = await asyncio.to_thread(push_when_possible, s.url, flag_doc(33), 10)
            assert again == 3

            put = await _until(rules, lambda e: e.event == "put" and e.id != lost_id)
            assert id_version(put.id) == 3 and value_of(put) == 33
            note = await _until(events, lambda e: e.id == put.id)
            assert data(note)["etag"] == put.id
            patch = await _until(ev, lambda e: e.id == put.id)
            assert data(patch)["flags"][0]["value"] == 33
            await until(lambda: in_process.get_integer_value("n", 0) == 33, 10,
                        "the in-process provider at Redis's version 3")

        # Pollers holding the lost write's ETag get the new document.
        polled = await http.get("/v1/rules", headers={**auth,
                                                      "If-None-Match": lost_rules.headers["etag"]})
        assert polled.status_code == 200 and polled.headers["etag"] == f'"{put.id}"'
        # The same request body as before the failover: not the lost write's cached results.
        assert (await bulk()).json()["flags"][0]["value"] == 33
        assert (await bulk(flagConfigEtag=put.id)).json()["flags"][0]["value"] == 33
        # A client resuming with the lost write's id is sent the rules.
        async with Stream(http, "/v1/stream/rules", key=skey, last_event_id=lost_id) as r:
            got = await r.next(timeout=3.0)
            assert (got.event, got.id, value_of(got)) == ("put", put.id, 33)


async def _until(stream: Stream, match: Any, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            event = await stream.next(timeout=timeout)
            if match(event):
                return event
