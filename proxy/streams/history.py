"""Recent changes per environment, for resuming streams with ``Last-Event-ID``.

Every change the store publishes is recorded here as an :class:`Entry` carrying what a
stream needs to replay it (the new raw JSON of the touched flags, the deleted keys, the
evaluators and metadata when they changed). The newest few versions also keep their
:class:`FlagSet` snapshot, so the evaluated stream can diff a context's results between the
client's version and now. When the ring does not reach back far enough, the Redis change
stream ``flagedge:{ENV}:changes`` (DESIGN §3) is read with XREVRANGE, for rules streams
only and at most :data:`REDIS_MAX_ENTRIES` entries back; when that does not reach either
(trimmed, another epoch, too far, Redis down or busy) the caller sends a fresh ``put``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.model import JSON, Change, ChangeRecord, FlagSet, id_version, state_id
from proxy.storage import changes, layout
from proxy.storage.replies import text

log = logging.getLogger("flagedge.changelog")

DEFAULT_CAPACITY = 1024  # entries kept per environment
DEFAULT_SNAPSHOTS = 32  # FlagSet snapshots kept per environment (evaluated-stream resume)
REDIS_PAGE = 200  # entries per XREVRANGE round trip
# A resume further behind than this gets a put (one encode, shared) rather than a walk of
# the log: a rules put costs less than parsing a thousand entries.
REDIS_MAX_ENTRIES = 1_000
REDIS_READS = 2  # change-log walks at a time per worker; past it, resumes get a put


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of one environment, as the streams replay it."""

    version: int
    at: float  # Unix seconds of the write (OFREP lastModified)
    upserted: Mapping[str, JSON] = field(default_factory=dict)  # flag key -> raw flag JSON
    deleted: tuple[str, ...] = ()
    evaluators: Mapping[str, JSON] | None = None  # the full map, when it changed
    metadata: Mapping[str, JSON] | None = None  # the full flag-set metadata, when it changed
    reset: bool = False  # whole set replaced: only a fresh ``put`` describes it
    epoch: str = ""
    state_id: str = ""  # the state this entry leads to (:func:`proxy.model.state_id`)


def entry_from_change(change: Change, flag_set: FlagSet) -> Entry:
    upserted = {k: flag_set.flags[k].raw for k in sorted(change.upserted) if k in flag_set.flags}
    return Entry(
        version=change.version,
        at=flag_set.updated_at or change.written_at or change.applied_at,
        upserted=upserted,
        deleted=tuple(sorted(change.deleted)),
        evaluators=dict(flag_set.evaluators) if change.evaluators_changed else None,
        metadata=dict(flag_set.metadata) if change.metadata_changed else None,
        reset=change.reset,
        epoch=flag_set.epoch,
        state_id=flag_set.state_id,
    )


def entry_from_record(record: ChangeRecord) -> Entry | None:
    """A change-log record as the streams replay it; None when it cannot be replayed (its
    JSON does not parse, or it has no version)."""
    if not record.readable or record.version < 0:  # half of it another tool broke
        return None
    flags = record.after.get("flags") or {}
    return Entry(
        version=record.version,
        at=record.at,
        upserted={k: v for k, v in sorted(flags.items()) if v is not None},
        deleted=tuple(sorted(k for k, v in flags.items() if v is None)),
        evaluators=record.after.get("$evaluators"),
        metadata=record.after.get("metadata"),
        # a new hashing generation is replayed as a fresh put (only a put carries it)
        reset="fractional_hash" in record.after,
        epoch=record.epoch,
        state_id=state_id(record.version, record.epoch, record.id),
    )


class EnvLog:
    """The ring of one environment."""

    __slots__ = ("entries", "snapshots")

    def __init__(self, capacity: int, snapshots: int):
        self.entries: deque[Entry] = deque(maxlen=capacity)
        self.snapshots: deque[FlagSet] = deque(maxlen=snapshots)


class ChangeLog:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, snapshots: int = DEFAULT_SNAPSHOTS):
        self.capacity = capacity
        self.snapshot_count = snapshots
        self._envs: dict[str, EnvLog] = {}

    def record(self, change: Change, flag_set: FlagSet) -> Entry:
        """Called synchronously for every store publish, so the ring always matches the
        store's current version."""
        log_ = self._envs.get(change.env)
        if log_ is None:
            log_ = self._envs[change.env] = EnvLog(self.capacity, self.snapshot_count)
        entry = entry_from_change(change, flag_set)
        if log_.entries and entry.version <= log_.entries[-1].version:
            # Versions went backwards (a new epoch after data loss): older entries describe
            # another history and must never be replayed.
            log_.entries.clear()
            log_.snapshots.clear()
        log_.entries.append(entry)
        log_.snapshots.append(flag_set)
        return entry

    def forget(self, env: str) -> None:
        self._envs.pop(env, None)

    def since(self, env: str, held: str, current: int) -> list[Entry] | None:
        """Entries after the state ``held`` (a state id) up to version ``current``, in order;
        None when the ring does not hold that state itself (its id tells it from another
        epoch's or write's same version number) and every entry after it. The caller then
        asks Redis, or sends a ``put``."""
        version = id_version(held)
        log_ = self._envs.get(env)
        if version is None or log_ is None or not log_.entries:
            return None
        entries = log_.entries
        if entries[0].version > version or entries[-1].version < current:
            return None
        start = _index(entries, version)
        if start is None or entries[start].state_id != held:
            return None
        out = list(itertools.islice(entries, start + 1, start + 1 + current - version))
        if not _contiguous(out, version, current):
            return None
        return out

    def snapshot(self, env: str, held: str) -> FlagSet | None:
        """The flag set of state ``held``, when still kept."""
        log_ = self._envs.get(env)
        version = id_version(held)
        if log_ is None or version is None:
            return None
        for fs in reversed(log_.snapshots):
            if fs.version == version:
                return fs if fs.state_id == held else None
            if fs.version < version:
                break
        return None

    def oldest(self, env: str) -> int | None:
        log_ = self._envs.get(env)
        return log_.entries[0].version if log_ and log_.entries else None


def _index(entries: deque[Entry], version: int) -> int | None:
    """Where ``version`` is in the ring: versions are mostly consecutive (a reload after a
    gap can skip some), so look where it would be, then search."""
    guess = version - entries[0].version
    if 0 <= guess < len(entries) and entries[guess].version == version:
        return guess
    return next((i for i, e in enumerate(entries) if e.version == version), None)


def _contiguous(entries: list[Entry], version: int, current: int) -> bool:
    expected = version + 1
    for e in entries:
        if e.version != expected:
            return False
        expected += 1
    return expected == current + 1


async def fetch_from_redis(redis: Any, stream_key: str, held: str, current: int,
                           epoch: str = "") -> list[Entry] | None:
    """Entries after state ``held`` up to version ``current`` from the Redis change stream,
    newest first pages read back until the entry of ``held`` is reached. None when the
    stream does not reach back that far (trimmed), has a gap, belongs to another epoch, or
    its entry at that version is another state (another epoch's or write's)."""
    version = id_version(held)
    if version is None or version >= current or current - version > REDIS_MAX_ENTRIES:
        return None
    collected: list[Entry] = []
    upper = "+"
    read = 0
    while read < REDIS_MAX_ENTRIES:
        page = await redis.xrevrange(stream_key, max=upper, min="-", count=REDIS_PAGE)
        if not page:
            return None
        read += len(page)
        for stream_id, fields in page:
            entry = entry_from_record(changes.parse(stream_id, fields))
            if entry is None:
                return None  # unreadable: the caller sends a fresh put
            if epoch and entry.epoch and entry.epoch != epoch:
                return None
            if entry.version > current:
                continue
            if entry.version <= version:
                if entry.state_id != held:
                    return None  # the client holds another state of that number
                collected.reverse()
                return collected if _contiguous(collected, version, current) else None
            collected.append(entry)
        last_id = text(page[-1][0])
        upper = "(" + last_id  # exclusive upper bound (Redis >= 6.2)
        if len(page) < REDIS_PAGE:
            return None  # reached the oldest entry: the held state is not in the stream
    return None


class RedisHistory:
    """Change-stream reads for resume, shared and bounded: after a proxy restart thousands
    of clients reconnect with the same Last-Event-ID and cost one XREVRANGE walk, not one
    each; at most :data:`REDIS_READS` walks run at once, and a resume arriving while they do
    gets a put (None) instead of queueing behind them."""

    def __init__(self, redis: Any, size: int = 32, reads: int = REDIS_READS):
        self.redis = redis
        self.size = size
        self.reads = reads
        self._running = 0
        self._entries: dict[tuple[str, str, int, str], asyncio.Future[list[Entry] | None]] = {}

    async def entries(self, env: str, held: str, current: int, epoch: str
                      ) -> list[Entry] | None:
        key = (env, held, current, epoch)
        task = self._entries.get(key)
        if task is None:
            if self._running >= self.reads:
                return None  # busy: a put costs less than waiting for the log
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._fetch(env, held, current, epoch))
            self._entries[key] = task
            while len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]
        result = await asyncio.shield(task)
        if result is None:
            self._entries.pop(key, None)  # maybe Redis was down: ask again next time
        return result

    async def _fetch(self, env: str, held: str, current: int, epoch: str
                     ) -> list[Entry] | None:
        try:
            return await fetch_from_redis(self.redis, layout.changes_key(env), held, current, epoch)
        except Exception as exc:  # Redis down: the caller sends a snapshot instead
            log.warning("change log read failed: %s", exc, extra={"env": env})
            return None
        finally:
            self._running -= 1
