"""File source: ``flagedge serve --flags FILE`` (offline, no Redis) and the ``--bootstrap``
loader. The file is watched (watchfiles, on its directory so editors that save by rename are
seen). Like flagd, a file is served tolerantly: an invalid flag answers the error flagd gives
for it at evaluation time (or keeps the version served before the edit) while every other
flag is served; only a file that is no flag
document at all (unreadable, bad JSON) is refused, and then the last good rules stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
from pathlib import Path

from watchfiles import awatch

from proxy.evaluation.documents import compile_document, flag_set, load_document
from proxy.model import Change, FlagSet, InvalidDocument, canonical
from proxy.store import Store

log = logging.getLogger("flagedge.sources.file")


class InvalidFlagFile(Exception):
    """The file cannot be served at all: unreadable, not JSON, or no flag document. (A file
    with invalid flags is served: those flags answer their evaluation-time error.)"""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def read_flag_file(path: Path, env: str, store: Store, *, version: int,
                   epoch: str) -> FlagSet:
    """Parse and compile a flag file as a source serves it (tolerantly, like flagd): each
    invalid flag is served as the error flagd gives for it and logged with file, flag and
    JSON path; raises InvalidFlagFile (logged, counted) when nothing in it can be served."""
    try:
        data = path.read_bytes()
        updated_at = path.stat().st_mtime
    except OSError as exc:
        log.error("rejected env=%s file=%s: cannot read: %s", env, path, exc)
        store.rejected_total += 1
        raise InvalidFlagFile(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        fs = compile_document(load_document(data), version=version, epoch=epoch,
                              updated_at=updated_at, tolerant=True)
    except InvalidDocument as exc:
        for p in exc.problems:
            log.error("rejected env=%s file=%s path=%s problem=%s", env, path, p.path or "-",
                      p.message)
        store.rejected_total += 1
        raise InvalidFlagFile(f"invalid flag file {path}: {exc.problems[0]}") from None
    fs = keep_last_good(fs, store.get(env))
    report_rejected(env, f"file={path}", fs)
    store.rejected_total += sum(1 for k in fs.rejected if k)
    return fs


def keep_last_good(fs: FlagSet, previous: FlagSet | None) -> FlagSet:
    """A flag an edit made invalid keeps the version served before (DESIGN §2, as the Redis
    source does); only a flag without one is served as its error."""
    if previous is None or not fs.rejected:
        return fs
    rehashed = previous.fractional_hash is not fs.fractional_hash
    kept = {k: previous.flags[k] for k in fs.rejected
            if k in previous.flags and not previous.flags[k].problems
            and not (rehashed and previous.flags[k].fractional)}  # compiled for other hashing
    if not kept:
        return fs
    return flag_set({**fs.flags, **kept}, fs.evaluators, fs.metadata, version=fs.version,
                    epoch=fs.epoch, updated_at=fs.updated_at, rejected=fs.rejected,
                    fractional_hash=fs.fractional_hash)


def report_rejected(env: str, where: str, fs: FlagSet) -> None:
    """Log every rejected definition of a tolerant load, and what is served instead."""
    for key, problems in fs.rejected.items():
        flag = fs.flags.get(key)
        if flag is None:
            served = "not served"
        elif not flag.problems:
            served = "last good version kept"
        else:
            served = "served as " + str(getattr(flag.static_result, "error_code", None))
        for p in problems:
            log.error("rejected env=%s %s flag=%s path=%s problem=%s (%s)", env, where,
                      key or "-", p.path or "-", p.message, served if key else "ignored")


def load_flag_file(path: Path, env: str, store: Store, *, version: int,
                   epoch: str) -> FlagSet | None:
    """:func:`read_flag_file`, None when the file cannot be served (already logged)."""
    try:
        return read_flag_file(path, env, store, version=version, epoch=epoch)
    except InvalidFlagFile:
        return None


class FileSource:
    def __init__(self, path: Path, store: Store, env: str = "default", *,
                 debounce_ms: int = 50) -> None:
        self.path, self.store, self.env = Path(path), store, env
        self.debounce_ms = debounce_ms
        self.ready = False
        self.settled = asyncio.Event()
        self.watching = False  # the file watch is armed
        # Stream tokens need a secret; offline there is no Redis to share one, so replicas
        # (or uvicorn workers) agree only when FLAGEDGE_SECRET is set.
        env_secret = os.environ.get("FLAGEDGE_SECRET")
        self.secret: bytes | None = env_secret.encode() if env_secret else secrets.token_bytes(32)
        self._digest: str | None = None
        self._version = 0
        self._epoch = "file:" + hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]

    def reload(self) -> bool:
        """Load the file if its content changed. Returns True when new rules were published."""
        try:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError as exc:
            self._degrade(f"cannot read {self.path}: {exc}")
            return False
        if digest == self._digest:
            return False
        try:
            fs = read_flag_file(self.path, self.env, self.store, version=self._version + 1,
                                epoch=self._epoch)
        except InvalidFlagFile as exc:
            self._digest = digest  # same bad bytes again: nothing new to say
            self._degrade(f"{exc.reason}; serving version {self._version}" if self.ready
                          else exc.reason, invalid=True)
            return False
        previous = self.store.get(self.env)
        self._digest, self._version = digest, fs.version
        change = _change(self.env, previous, fs)
        if previous is None:  # the file's mtime is no propagation time on a first load
            change = dataclasses.replace(change, written_at=None)
        self.store.publish(self.env, fs, change)
        self.store.set_status(self.env, connected=True)
        self.ready = True
        log.info("reload env=%s file=%s version=%d flags=%d", self.env, self.path, fs.version,
                 len(fs.flags))
        return True

    def _degrade(self, reason: str, invalid: bool = False) -> None:
        log.warning("file source env=%s: %s", self.env, reason)
        self.store.set_status(self.env, connected=self.ready,
                              degraded_reason=reason if self.ready else None, error=reason,
                              invalid=invalid)

    async def run(self) -> None:
        self.reload()
        self.settled.set()
        name = self.path.name
        while True:
            try:
                # yield_on_timeout: the first (empty) yield says the watch is armed, and
                # re-checking then closes the gap between the first load and arming; later
                # timeouts re-check the content hash (cheap) as a safety net.
                async for _changes in awatch(
                    self.path.parent, debounce=self.debounce_ms, step=10,
                    watch_filter=lambda _change, p: Path(p).name == name,
                    yield_on_timeout=True, rust_timeout=1000,
                ):
                    self.watching = True
                    self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # directory vanished, inotify limits...: retry
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cancel turned into an error
                    raise asyncio.CancelledError from exc
                self.watching = False
                log.warning("file watch failed for %s: %s; retrying", self.path, exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    self.reload()

    async def resync(self) -> None:
        self._digest = None
        self.reload()

    async def close(self) -> None:
        return None


def _change(env: str, previous: FlagSet | None, fs: FlagSet) -> Change:
    old = previous.flags if previous else {}
    upserted = frozenset(k for k, f in fs.flags.items()
                         if k not in old or canonical(dict(old[k].raw)) != canonical(dict(f.raw)))
    return Change(
        env=env, version=fs.version, upserted=upserted,
        deleted=frozenset(k for k in old if k not in fs.flags),
        evaluators_changed=previous is None
        or canonical(dict(previous.evaluators)) != canonical(dict(fs.evaluators)),
        metadata_changed=previous is None
        or canonical(dict(previous.metadata)) != canonical(dict(fs.metadata)),
        reset=True, written_at=fs.updated_at or None,
    )
