"""Redis source: atomic full load per environment, then push-based change following.

One connection blocks in ``XREAD`` over every environment's change stream plus
``flagedge:events`` (in Cluster mode, one blocking reader per stream: a multi-key XREAD
across slots is refused). Each entry is applied when its version is local+1; anything else
(gap, trimmed stream, restart, new epoch) triggers a full reload of that environment. A
Redis that comes back empty or older never wipes served rules (DESIGN §3). Keys are re-read
every ``keys_refresh`` seconds as well, in case an announcement was lost; a Redis whose
``flagedge:layout`` is newer than this code is not followed at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from proxy.keys import KeyRecord, KeyRing
from proxy.model import Change
from proxy.sources.assemble import apply_change, build_full
from proxy.sources.base import Backoff
from proxy.sources.file import load_flag_file
from proxy.storage import changes, layout
from proxy.storage import url as redisurl
from proxy.storage.keys import records_from_redis
from proxy.storage.replies import text
from proxy.store import Store

log = logging.getLogger("flagedge.sources.redis")
BOOTSTRAP_EPOCH = "bootstrap:"
LAYOUT_RETRY_S = 5.0  # how often a refused (too new) Redis layout is looked at again



class RedisSource:
    def __init__(self, url: str, store: Store, keyring: KeyRing, *,
                 bootstrap: Path | None = None, env: str = "default", cluster: bool = False,
                 block_ms: int = 2000, backoff_cap: float = 0.5,
                 connect_timeout: float = 2.0, keys_refresh: float = 30.0) -> None:
        # backoff_cap: a retry at most every 0.5 s (a refused connect costs Redis nothing) so
        # the resync starts within a second of Redis answering, however long it was away.
        self.url, self.store, self.keyring = url, store, keyring
        self.bootstrap, self.env, self.cluster = bootstrap, env, cluster
        self.block_ms, self.backoff_cap, self.connect_timeout = block_ms, backoff_cap, connect_timeout
        self.keys_refresh = keys_refresh  # seconds between key re-reads; 0 = announcements only
        self.ready = False
        self.settled = asyncio.Event()
        self.connected = False
        self.secret: bytes | None = None
        # flagedge:secret as it was before Redis lost its data: stream tokens signed with it
        # stay valid for their lifetime (proxy.api.tokens).
        self.previous_secret: bytes | None = None
        self._last: dict[str, str] = {}  # env -> last change-stream id seen
        self._stale: dict[str, str] = {}  # env -> why Redis is not adopted (reload on any entry)
        self._events_id: str | None = None
        self._resync = asyncio.Event()
        self._client: Any = None
        self._failures = 0
        self._bootstrap_tried = False
        self._keys_kept = False  # known keys kept after Redis lost its data
        self._unloaded: set[str] = set()  # cluster: envs whose node was down at load

    # -- lifecycle -----------------------------------------------------------------------------
    def _make_client(self) -> Any:
        # socket_timeout bounds a silent partition or a paused Redis (detected within ~5 s):
        # a healthy XREAD answers within block_ms even when nothing changed.
        return redisurl.async_client(
            self.url, cluster=self.cluster, socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.block_ms / 1000 + 3, health_check_interval=30,
        )

    async def run(self) -> None:
        backoff = Backoff(cap=self.backoff_cap)
        while True:
            client = self._client = self._make_client()
            try:
                await self._session(client, backoff)
            except asyncio.CancelledError:
                raise
            except layout.LayoutTooNew as exc:
                self._refuse(str(exc))
                await asyncio.sleep(LAYOUT_RETRY_S)
            except Exception as exc:  # never raise for Redis faults: serve last good, retry
                _reraise_if_cancelling()
                self._on_down(exc)
                if not self.ready and self.bootstrap is not None and not self._bootstrap_tried:
                    self._bootstrap_tried = True  # once: a bad file is reported, not retried
                    self._load_bootstrap()
                await asyncio.sleep(backoff.next())
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def resync(self) -> None:
        self._resync.set()

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def _session(self, client: Any, backoff: Backoff) -> None:
        await client.ping()
        await self._load_everything(client)
        if self.store.refused:
            log.warning("redis layout readable again; following it")
            self.store.refused = None
        if not self.connected:
            log.info("redis connected url=%s envs=%d keys=%d", redisurl.redact(self.url),
                     len(self._last), len(self.keyring))
        self.connected, self._failures = True, 0
        self.store.set_status("*", connected=True)
        backoff.reset()
        refresher = (asyncio.create_task(self._refresh_loop(client), name="keys-refresh")
                     if self.keys_refresh > 0 else None)
        try:
            if self.cluster:
                await self._follow_cluster(client)
            else:
                await self._follow(client)
        finally:
            if refresher is not None:
                refresher.cancel()

    def _refuse(self, reason: str) -> None:
        """Keep serving the last good rules, but report not ready: this Redis was written by
        a newer flagedge, and reading it with this code could serve it wrong."""
        if self.store.refused != reason:
            log.error("not following redis: %s; serving last good rules, /readyz not ready",
                      reason)
        self.store.refused = reason
        self.store.set_status("*", connected=True, degraded_reason=reason)  # for the metric
        self.settled.set()

    def _on_down(self, exc: BaseException) -> None:
        self._failures += 1
        reason = f"redis unreachable: {type(exc).__name__}: {exc}"
        if self.connected or self._failures == 1:
            log.warning("redis down: %s; serving last good rules, reconnecting", reason,
                        exc_info=not _is_redis_fault(exc))
        else:
            log.debug("redis still down: %s", reason)
        self.connected = False
        self.store.set_status("*", connected=False, degraded_reason=reason, error=str(exc))
        for env in self.store.envs():
            fs = self.store.get(env)
            what = (f"bootstrap file {self.bootstrap}" if fs and fs.epoch.startswith(
                BOOTSTRAP_EPOCH) else f"version {fs.version if fs else '?'}")
            self.store.set_status(env, connected=False, error=str(exc),
                                  degraded_reason=f"redis unreachable; serving {what}")
        self.settled.set()  # the bootstrap file, if any, is loaded before anything awaits

    def _load_bootstrap(self) -> None:
        assert self.bootstrap is not None
        fs = load_flag_file(self.bootstrap, self.env, self.store, version=0,
                            epoch=BOOTSTRAP_EPOCH + str(self.bootstrap))
        if fs is None:
            return
        self.store.publish(self.env, fs, Change(env=self.env, version=0, reset=True,
                                                upserted=frozenset(fs.flags)))
        self.store.set_status(self.env, connected=False, degraded_reason=(
            f"redis unreachable at start; serving bootstrap file {self.bootstrap}"))
        self.ready = True
        log.warning("bootstrap env=%s file=%s flags=%d (redis unreachable)", self.env,
                    self.bootstrap, len(fs.flags))

    # -- full loads ------------------------------------------------------------------------------
    async def _last_id(self, client: Any, key: str) -> str:
        rows = await client.xrevrange(key, "+", "-", count=1)
        return text(rows[0][0]) if rows else "0-0"

    async def _load_everything(self, client: Any) -> None:
        started = time.perf_counter()
        layout.check_layout(await client.get(layout.LAYOUT))  # before anything is read
        existed = await client.exists(layout.SECRET)
        if not existed:
            await client.set(layout.SECRET, secrets.token_hex(32), nx=True)
        known, self.secret = self.secret, await client.get(layout.SECRET)
        # The secret is created once and never deleted or changed: after we knew Redis, its
        # absence, or a value other than the one we saw (another process found it missing
        # first and created a new one), means Redis lost its data; an empty key hash then is
        # that loss, not a mass revocation. Every process and worker tells on its own.
        data_lost = self._events_id is not None and (not existed or self.secret != known)
        if known is not None and self.secret != known:
            self.previous_secret = known
        # Read the events position before the state it announces: later announcements are
        # then replayed by XREAD (applying them twice is harmless).
        events_last = await self._last_id(client, layout.EVENTS)
        if self._events_id is not None and not data_lost:
            for _id, fields in await client.xrange(layout.EVENTS, f"({self._events_id}",
                                                   events_last):
                f = {text(k): text(v) for k, v in fields.items()}
                if f.get("type") == "env" and f.get("op") == "deleted":
                    self._forget_env(f.get("env", ""))
        self._events_id = events_last
        records = records_from_redis((await client.hgetall(layout.KEYS)).items())
        # Kept until keys are written again, across later reconnects too: the empty hash is
        # still the loss then, not a mass revocation.
        self._keys_kept = not records and (data_lost or self._keys_kept) and len(self.keyring) > 0
        if not self._keys_kept:
            self.keyring.replace_all(records)
        elif data_lost:
            log.warning("redis lost its data (flagedge:secret %s, no keys); keeping %d known "
                        "keys until keys are written again",
                        "missing" if not existed else "replaced", len(self.keyring))
        listed = {text(e) for e in await client.smembers(layout.ENVS)}
        for env in sorted(listed | set(self.store.envs())):
            try:
                await self._load_env(client, env, listed=env in listed)
            except Exception as exc:
                # Cluster: the node of this environment's slot is down; the others load and
                # follow, and its reader retries (see _follow_cluster).
                if not (self.cluster and _is_redis_fault(exc)):
                    raise
                self._unloaded.add(env)
                self._node_down(env, exc)
        self.ready = True
        self.settled.set()
        log.info("resync envs=%d keys=%d stale=%d took_ms=%.1f", len(self._last),
                 len(self.keyring), len(self._stale), (time.perf_counter() - started) * 1000)

    async def _load_env(self, client: Any, env: str, listed: bool = True,
                        written_at: float | None = None) -> None:
        raw_flags, meta_map, self._last[env] = layout.parse_snapshot(
            await client.eval(layout.SNAPSHOT_LUA, 3, *layout.env_keys(env)))
        current = self.store.get(env)
        if "version" not in meta_map:
            if current is not None:
                what = ("serving bootstrap file" if current.epoch.startswith(BOOTSTRAP_EPOCH)
                        else f"serving last good version {current.version}")
                self._mark_stale(env, f"redis has no data for environment {env}; {what}")
            return
        version, epoch = int(meta_map["version"]), meta_map.get("epoch", "")
        if (current is not None and epoch == current.epoch and version < current.version):
            self._mark_stale(env, f"redis has version {version} of {env}, older than the "
                                  f"served {current.version}; keeping last good rules")
            return
        fs, change, rej = build_full(env, raw_flags, meta_map, current, written_at,
                                     revision=self._last[env])  # the newest change entry's id
        was_stale = self._stale.pop(env, None)
        self.store.set_status(env, connected=True)
        if rej.problems:
            self.store.rejected_total += rej.count
            rej.report(version)
        if (current is not None and fs.state_id == current.state_id
                and not (change.upserted or change.deleted or change.evaluators_changed
                         or change.metadata_changed)):
            return  # nothing moved while we were away
        self.store.publish(env, fs, change)
        log.info("reload env=%s version=%d epoch=%s flags=%d upserted=%d deleted=%d "
                 "rejected=%d%s%s", env, version, epoch, len(fs.flags), len(change.upserted),
                 len(change.deleted), rej.count, " (was stale)" if was_stale else "",
                 "" if listed else " (not in flagedge:envs)")

    # -- periodic key re-read ------------------------------------------------------------------
    async def _refresh_loop(self, client: Any) -> None:
        """Every ``keys_refresh`` s, re-read flagedge:keys: a key changed without an
        announcement (a lost XADD, an HDEL by hand) is still picked up. Runs beside the
        follower; faults are the follower's to notice, so this one only logs them."""
        while True:
            await asyncio.sleep(self.keys_refresh)
            try:
                await self._refresh_keys(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("key refresh failed: %s: %s", type(exc).__name__, exc)

    async def _refresh_keys(self, client: Any) -> None:
        raw_layout, secret = await client.get(layout.LAYOUT), await client.get(layout.SECRET)
        events_last = await self._last_id(client, layout.EVENTS)
        records = records_from_redis((await client.hgetall(layout.KEYS)).items())
        try:
            layout.check_layout(raw_layout)
        except layout.LayoutTooNew:
            self._resync.set()  # the full load refuses it, ending this session
            return
        if secret != self.secret:
            self._resync.set()  # data lost (or re-created): the full load tells which
            return
        if self._keys_kept and not records:  # still the data loss, not a mass revocation
            log.debug("key refresh: no keys in redis since it lost its data; keeping %d "
                      "known keys", len(self.keyring))
            return
        if _stream_id(self._events_id) > _stream_id(events_last):
            return  # announcements newer than what we read were applied: next round
        before = self.keyring.records()
        if before == records:
            return
        self.keyring.replace_all(records)
        self._keys_kept = False
        gone, new = before.keys() - records.keys(), records.keys() - before.keys()
        log.warning("key refresh: %d revoked and %d added without an announcement "
                    "(revoked ids=%s)", len(gone), len(new), _names(frozenset(h[:12] for h in gone)))

    def _mark_stale(self, env: str, reason: str) -> None:
        if self._stale.get(env) != reason:
            log.warning("stale env=%s: %s", env, reason)
        self._stale[env] = reason
        self.store.set_status(env, connected=True, degraded_reason=reason)

    def _forget_env(self, env: str) -> None:
        self._last.pop(env, None)
        self._stale.pop(env, None)
        if self.store.get(env) is not None:
            self.store.remove(env)
            log.info("deleted env=%s (flagedge envs delete)", env)

    # -- following -------------------------------------------------------------------------------
    async def _follow(self, client: Any) -> None:
        resync_wait: asyncio.Future[Any] | None = None
        read: asyncio.Future[Any] | None = None
        try:
            while True:
                _reraise_if_cancelling()
                if self._resync.is_set():
                    self._resync.clear()
                    log.info("resync requested")
                    await self._load_everything(client)
                streams: dict[str, str] = {layout.EVENTS: self._events_id or "0-0"}
                streams.update({layout.changes_key(e): i for e, i in self._last.items()})
                read = asyncio.ensure_future(
                    client.xread(streams, block=self.block_ms, count=1000))
                if resync_wait is None or resync_wait.done():
                    resync_wait = asyncio.ensure_future(self._resync.wait())
                done, _ = await asyncio.wait({read, resync_wait},
                                             return_when=asyncio.FIRST_COMPLETED)
                if read not in done:  # resync asked: drop the blocking read
                    read.cancel()
                    await asyncio.gather(read, return_exceptions=True)
                    continue
                await self._handle(client, read.result() or [])
        finally:
            for fut in (read, resync_wait):
                if fut is not None and not fut.done():
                    fut.cancel()

    async def _follow_cluster(self, client: Any) -> None:
        """One blocking reader per stream (each its own slot), feeding one queue, so entries
        are still applied by a single task. A reader whose node is down marks its
        environment degraded and retries alone: the other slots keep following."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                _reraise_if_cancelling()
                if self._resync.is_set():
                    self._resync.clear()
                    await self._load_everything(client)
                wanted = {layout.EVENTS,
                          *(layout.changes_key(e) for e in {*self._last, *self._unloaded})}
                for key in list(readers):
                    if key not in wanted or readers[key].done():
                        task = readers.pop(key)
                        if task.done() and not task.cancelled() and task.exception():
                            raise task.exception()  # type: ignore[misc]
                        task.cancel()
                for key in wanted - readers.keys():
                    readers[key] = asyncio.create_task(self._cluster_reader(client, key, queue))
                try:
                    key, got = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                try:
                    await self._apply_read(client, key, got)
                finally:
                    queue.task_done()
        finally:
            for task in readers.values():
                task.cancel()

    async def _cluster_reader(self, client: Any, key: str,
                              queue: asyncio.Queue[tuple[str, Any]]) -> None:
        """Read one stream; hand entries, a node failure (the exception) or its recovery
        (:data:`_NODE_BACK`) to the applying task, waiting until each is applied."""
        env = layout.env_of_changes_key(key) if key != layout.EVENTS else None
        backoff, down = Backoff(cap=2.0), False
        while True:
            _reraise_if_cancelling()
            try:
                if env is not None and env in self._unloaded:
                    await self._load_env(client, env)  # its node was down at load
                    self._unloaded.discard(env)
                start = self._events_id if env is None else self._last.get(env)
                if start is None:
                    return
                reply = await client.xread({key: start}, block=self.block_ms, count=1000)
            except Exception as exc:
                _reraise_if_cancelling()
                if not _is_redis_fault(exc):
                    raise
                if not down:
                    down = True
                    await queue.put((key, exc))
                    await queue.join()
                await asyncio.sleep(backoff.next())
                continue
            if down:
                down = False
                backoff.reset()
                await queue.put((key, _NODE_BACK))
                await queue.join()
            for k, entries in reply or []:
                await queue.put((text(k), entries))
                if env is None:
                    self._events_id = text(entries[-1][0])
                await queue.join()  # wait until applied before reading on

    async def _apply_read(self, client: Any, key: str, got: Any) -> None:
        env = layout.env_of_changes_key(key) if key != layout.EVENTS else None
        if isinstance(got, BaseException):
            self._node_down(env, got)
        elif got is _NODE_BACK:
            log.info("redis node back for %s", f"env={env}" if env else "keys and events")
            if env is not None and env not in self._unloaded:
                await self._load_env(client, env)  # clears its degraded status
        else:
            await self._handle(client, [(key, got)])

    def _node_down(self, env: str | None, exc: BaseException) -> None:
        """Cluster: the node holding ``env``'s slot (None: the events stream's) is down."""
        if env is None:
            log.warning("redis node of %s unreachable (%s: %s): key and environment events "
                        "wait for it; environments keep following", layout.EVENTS,
                        type(exc).__name__, exc)
            return
        fs = self.store.get(env)
        serving = f"serving version {fs.version}" if fs is not None else "no rules loaded"
        reason = f"redis node for environment {env} unreachable; {serving}"
        if self.store.status.get(env) is None or \
                self.store.status[env].degraded_reason != reason:
            log.warning("%s (%s: %s); other environments keep following", reason,
                        type(exc).__name__, exc)
        self.store.set_status(env, connected=False, degraded_reason=reason, error=str(exc))

    async def _handle(self, client: Any, reply: list[Any]) -> None:
        for key, entries in reply:
            key = text(key)
            if key == layout.EVENTS:
                for entry_id, fields in entries:
                    self._events_id = text(entry_id)
                    await self._on_event(client, {text(k): text(v) for k, v in fields.items()})
                continue
            env = layout.env_of_changes_key(key)
            for entry_id, fields in entries:
                if env not in self._last:
                    break  # deleted meanwhile
                self._last[env] = text(entry_id)
                if not await self._on_entry(client, env, fields):
                    break  # reloaded: the snapshot covers the rest of this batch

    async def _on_entry(self, client: Any, env: str, fields: dict[Any, Any]) -> bool:
        current = self.store.get(env)
        record = changes.parse("", fields)
        version, written_at = record.version, record.at or None
        epoch = record.epoch or (current.epoch if current else "")
        if (current is None or env in self._stale or epoch != current.epoch
                or version != current.version + 1):
            if (current is not None and env not in self._stale and epoch == current.epoch
                    and 0 < version <= current.version
                    and _stream_id(self._last[env]) <= _stream_id(current.revision)):
                return True  # already in the snapshot we loaded
            log.info("gap env=%s local=%s entry=%s epoch=%s: full reload", env,
                     current.version if current else None, version, epoch)
            await self._load_env(client, env, written_at=written_at)
            return False
        after = record.after
        if after is None:
            log.error("bad change entry env=%s version=%d: after is not a JSON object; full "
                      "reload", env, version)
            await self._load_env(client, env, written_at=written_at)
            return False
        fs, change, rej = apply_change(current, env, version, after, written_at,
                                       revision=self._last[env])
        if rej.problems:
            self.store.rejected_total += rej.count
            rej.report(version)
        # Compiling held the loop and publishing holds it again: requests that arrived
        # meanwhile go first (a storm of changes moved the normal clients' p99 by about one
        # change's whole cost; bench/soak.py). Entries are applied by this task alone, so
        # nothing else publishes this environment in between.
        await _let_requests_run()
        self.store.publish(env, fs, change)
        lag = (change.applied_at - written_at) * 1000 if written_at else -1.0
        log.info("applied env=%s version=%d upserted=%s deleted=%s rejected=%d lag_ms=%.1f",
                 env, version, _names(change.upserted), _names(change.deleted), rej.count, lag)
        return True

    async def _on_event(self, client: Any, f: dict[str, str]) -> None:
        kind, op = f.get("type"), f.get("op")
        if kind == "env" and f.get("env"):
            env = f["env"]
            if op == "created":
                await self._load_env(client, env)
            elif op == "deleted":
                self._forget_env(env)
        elif kind == "key" and f.get("hash"):
            key_hash = f["hash"]
            raw = await client.hget(layout.KEYS, key_hash) if op == "put" else None
            if raw is None:
                if self.keyring.remove(key_hash) is not None:
                    log.info("key revoked id=%s", key_hash[:12])
                return
            try:
                self.keyring.put(key_hash, KeyRecord.from_json(key_hash, raw))
                log.info("key updated id=%s", key_hash[:12])
            except ValueError as exc:
                log.error("bad key record id=%s: %s", key_hash[:12], exc)


_NODE_BACK = object()  # a cluster reader's node answers again


async def _let_requests_run() -> None:
    """Let what is ready on the event loop run first. A timer due at once, not
    ``sleep(0)``: that would requeue this task ahead of the requests, which only arrive
    with the loop's next poll of the sockets (the fan-out slices its work the same way:
    ``proxy.streams.fanout``)."""
    await asyncio.sleep(1e-9)


def _reraise_if_cancelling() -> None:
    """A cancellation delivered while redis-py awaits a command can be swallowed (seen with
    redis-py 8 on Python 3.11: the command returns or fails with another error and the task
    goes on, still marked "cancelling"); a cancelled source must still stop, or app
    shutdown hangs. Checked on every loop turn and on every error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _names(keys: frozenset[str], limit: int = 5) -> str:
    items = sorted(keys)
    text = ",".join(items[:limit])
    return text + (f",+{len(items) - limit}" if len(items) > limit else "") if items else "-"


def _stream_id(entry_id: str | None) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, seq); None, "" or malformed sort first. An
    entry at or below our version but after the write we hold is another history of those
    numbers (a failover to a lagging replica), not a duplicate."""
    ms, _, seq = (entry_id or "0-0").partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


def _is_redis_fault(exc: BaseException) -> bool:
    return isinstance(exc, RedisError | OSError | TimeoutError)
