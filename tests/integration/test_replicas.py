"""Three `flagedge serve` replicas on one Redis (one with ``--workers 2``), as a load balancer
spreads clients over them (issue 20). What one replica hands a client must hold on the others:
ETags, stream tokens, stream ids for resume, and a notification's promise that the re-fetch
will see the new rules even on a replica that is behind; a revocation reaches every stream.

Replica ``slow`` reaches Redis through a forwarder that holds every reply for
:data:`REDIS_DELAY_S`, so it learns of each change later than the others, as a replica in
another zone or under load does.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from proxy.model import id_version
from tests.integration.conftest import ProxyServer
from tests.integration.streams_support import Stream, data
from tests.redis_server import RedisServer, wait_until
from tests.tcp import pipe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DELAY_S = 0.25  # the slow replica's extra Redis latency; the OFREP catch-up waits 0.5 s


def doc(n: int) -> dict[str, Any]:
    return {"flags": {"n": {"state": "ENABLED", "variants": {"current": n, "other": -1},
                            "defaultVariant": "current",
                            "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "other",
                                                 None]}}}}


class DelayedForwarder:
    """TCP forwarder to Redis: requests go straight through, every reply chunk is held for
    ``delay`` seconds (latency, not a bandwidth limit: chunks keep their order)."""

    def __init__(self, target_port: int, delay: float):
        self.target_port, self.delay = target_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            self._socks += [down, up]
            threading.Thread(target=pipe, args=(down, up), daemon=True).start()
            threading.Thread(target=pipe, args=(up, down, self.delay), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            s.close()


@dataclass
class Replicas:
    fast: ProxyServer  # --workers 2
    other: ProxyServer
    slow: ProxyServer  # Redis replies delayed
    ckey: str
    skey: str

    @property
    def all(self) -> list[ProxyServer]:
        return [self.fast, self.other, self.slow]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[Replicas]:
    """One set for the module (starting four processes costs ~10 s): tests read versions
    and keys from it rather than assume them, and revoke only keys of their own."""
    tmp = tmp_path_factory.mktemp("replicas")
    redis_server = RedisServer(tmp / "redis").start()
    forwarder = DelayedForwarder(redis_server.port, REDIS_DELAY_S)
    slow_url = redis_server.url.replace(f":{redis_server.port}", f":{forwarder.port}")
    servers = [ProxyServer(redis_server, tmp / "proxy", extra_args=["--workers", "2"]),
               ProxyServer(redis_server, tmp / "proxy"),
               ProxyServer(None, tmp / "proxy", extra_args=["--redis", slow_url])]
    try:
        for server in servers:
            server.start()
        fast, other, slow = servers
        fast.push(doc(1))
        ckey, skey = fast.create_key("client"), fast.create_key("server")
        for server in (other, slow):
            server.wait_version(1)
            wait_until(lambda s=server: s.key_works(ckey) and s.key_works(skey), timeout=10,
                       what="keys on every replica")
        yield Replicas(fast, other, slow, ckey, skey)
    finally:
        for server in servers:
            server.close()
        forwarder.close()
        redis_server.stop()


def client_key_everywhere(r: Replicas) -> str:
    key = r.fast.create_key("client")
    for server in (r.other, r.slow):
        wait_until(lambda s=server: s.key_works(key), timeout=10, what="key on every replica")
    return key


def bulk(server: ProxyServer, key: str, context: dict[str, Any], **params: str
         ) -> httpx.Response:
    return httpx.post(f"{server.url}/ofrep/v1/evaluate/flags", json={"context": context},
                      params=params, headers={"Authorization": f"Bearer {key}"}, timeout=5.0)


def test_the_same_context_gets_the_same_etag_and_body_from_every_replica(replicas):
    for ctx in ({"targetingKey": "u1"}, {"targetingKey": "u2", "plan": "pro"}):
        answers = [bulk(s, replicas.ckey, ctx) for s in replicas.all for _ in range(4)]
        assert {r.status_code for r in answers} == {200}
        assert len({r.headers["etag"] for r in answers}) == 1, [r.headers["etag"] for r in answers]
        assert len({r.content for r in answers}) == 1
        # A client revalidating on any replica gets a 304.
        etag = answers[0].headers["etag"]
        for server in replicas.all:
            r = httpx.post(f"{server.url}/ofrep/v1/evaluate/flags", json={"context": ctx},
                           headers={"Authorization": f"Bearer {replicas.ckey}",
                                    "If-None-Match": etag}, timeout=5.0)
            assert r.status_code == 304
    rules = {httpx.get(f"{s.url}/v1/rules", headers={"Authorization": f"Bearer {replicas.skey}"},
                       timeout=5.0).headers["etag"] for s in replicas.all}
    assert len(rules) == 1


async def test_a_stream_url_from_one_replica_opens_on_the_others(replicas):
    for issuer in replicas.all:
        uri = bulk(issuer, replicas.ckey, {})
        endpoint = uri.json()["eventStreams"][0]["endpoint"]["requestUri"]
        assert "token=" in endpoint
        ids = set()
        for server in replicas.all:
            async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http, \
                    Stream(http, endpoint) as s:  # no key header: the token alone
                ids.add((await s.next(data_only=False)).id)
        assert len(ids) == 1 and id_version(ids.pop()) is not None  # one state, one id


async def test_a_refetch_after_a_faster_replicas_notification_sees_the_new_rules(replicas):
    """The notification comes from a replica that already has the change; the client's
    re-fetch lands on the slow one, which waits for it (≤ 0.5 s) rather than answer stale."""
    r = replicas
    async with httpx.AsyncClient(base_url=r.other.url, timeout=5.0) as http, \
            Stream(http, "/ofrep/v1/events", key=r.ckey) as events:
        await events.next(data_only=False)
        for n in (102, 103, 104):
            version = await asyncio.to_thread(r.other.push, doc(n), wait=False)
            note = await events.next()
            etag = data(note)["etag"]
            assert id_version(etag) == version
            started = time.monotonic()
            got = await asyncio.to_thread(bulk, r.slow, r.ckey, {}, flagConfigEtag=etag,
                                          flagConfigLastModified=str(data(note)["lastModified"]))
            waited = time.monotonic() - started
            assert got.status_code == 200 and got.json()["flags"][0]["value"] == n, (n, waited)


async def test_a_resume_on_another_replica_replays_exactly_the_missed_versions(replicas):
    r = replicas
    async with httpx.AsyncClient(timeout=5.0) as http:
        async with Stream(http, f"{r.fast.url}/v1/stream/rules", key=r.skey) as s:
            held = (await s.next()).id
        missed = [await asyncio.to_thread(r.fast.push, doc(n)) for n in (5, 6)]
        assert missed == [id_version(held) + 1, id_version(held) + 2]
        for server in (r.other, r.slow):
            server.wait_version(missed[-1])
            async with Stream(http, f"{server.url}/v1/stream/rules", key=r.skey,
                              last_event_id=held) as s:
                got = [await s.next(), await s.next()]
                assert [(e.event, id_version(e.id)) for e in got] == [
                    ("patch", v) for v in missed]
                assert data(got[-1])["flags"]["n"]["variants"]["current"] == 6
            async with Stream(http, f"{server.url}/ofrep/v1/events", key=r.ckey,
                              last_event_id=held) as s:
                got = [await s.next(), await s.next()]
                assert [id_version(e.id) for e in got] == missed


async def test_a_stream_resumed_on_a_replica_behind_it_tells_no_version_twice(replicas):
    """A client told of a change by a fast replica reconnects to the slow one before it has
    that change (a rolling restart does this): the slow one waits for it (<= 0.5 s) and then
    resumes, rather than tell its older state at once and the client's own one after it."""
    r = replicas
    async with httpx.AsyncClient(timeout=5.0) as http, \
            Stream(http, f"{r.other.url}/ofrep/v1/events", key=r.ckey) as fast:
        await fast.next(data_only=False)
        for n in (301, 302, 303):
            version = await asyncio.to_thread(r.other.push, doc(n), wait=False)
            held = (await fast.next()).id
            assert id_version(held) == version
            async with Stream(http, f"{r.slow.url}/ofrep/v1/events", key=r.ckey,
                              last_event_id=held) as resumed:
                newer = await asyncio.to_thread(r.other.push, doc(n + 50), wait=False)
                assert id_version((await fast.next()).id) == newer
                told = await resumed.next()
                assert id_version(told.id) == newer, (told.id, held)


async def test_a_revocation_closes_streams_on_every_replica_and_worker(replicas):
    r = replicas
    key = client_key_everywhere(r)
    mark = len(r.fast.logs())
    async with httpx.AsyncClient(timeout=5.0) as http:
        streams = [Stream(http, f"{s.url}/ofrep/v1/events", key=key) for s in (r.other, r.slow)]
        # Streams on the --workers 2 replica until both of its workers hold some (the kernel
        # hands each new connection to either).
        opened = 0
        while len(stream_workers(r.fast, mark)) < 2 and opened < 40:
            streams.append(Stream(http, f"{r.fast.url}/ofrep/v1/events", key=key))
            await streams[-1].__aenter__()
            opened += 1
            # The access log is written every 0.2 s: wait until it shows this stream.
            await asyncio.to_thread(wait_until, lambda n=opened: len(
                re.findall(r"\"GET /ofrep/v1/events", r.fast.logs()[mark:])) >= n, 5, 0.02,
                "the access line of the stream just opened")
        assert len(stream_workers(r.fast, mark)) == 2
        for s in streams[:2]:
            await s.__aenter__()
        try:
            await asyncio.to_thread(r.fast.revoke_key, key)
            for s in streams:
                await s.wait_ended(timeout=10)
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)
    for server in r.all:
        assert not server.key_works(key)


def stream_workers(server: ProxyServer, since: int = 0) -> set[str]:
    """Pids of the workers that answered an events-stream request (the access log, from
    character ``since`` on)."""
    return set(re.findall(r"INFO access \[(\d+)\] \S+ \"GET /ofrep/v1/events",
                          server.logs()[since:]))


def _two_workers_served(server: ProxyServer) -> bool:
    return len(set(re.findall(r"INFO access \[(\d+)\]", server.logs()))) >= 2


def test_both_workers_of_the_two_worker_replica_serve(replicas):
    wait_until(lambda: bulk(replicas.fast, replicas.ckey, {}).status_code == 200
               and _two_workers_served(replicas.fast), timeout=20,
               what="requests answered by both workers (new connections spread by the kernel)")
