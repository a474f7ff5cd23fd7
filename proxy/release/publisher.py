"""The write side used by the CLI: read, validate, diff, atomic push, history, rollback,
export and environment deletion, on the Redis layout of DESIGN §3.

Every write to an environment is one Lua script on that environment's slot (hash changes,
version bump, XADD of the change with before/after). Registering the environment in
``flagedge:envs`` and announcing it on ``flagedge:events`` is a second step, because those
keys live in other slots of a Cluster.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.evaluation.documents import (
    FRACTIONAL_HASH_KEY,
    compile_document,
    load_document,
    validate_document,
)
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    ChangeRecord,
    FractionalHash,
    InvalidDocument,
    Problem,
    canonical,
)
from proxy.release.changeset import Document, Plan, make_plan
from proxy.storage import changes, layout, policy
from proxy.storage import requests as stored_requests
from proxy.storage.keys import ensure_secret
from proxy.storage.replies import text

SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
UNPARSABLE = "$unparsable"  # stands for stored JSON that does not parse (see document())


class ConflictError(Exception):
    """``--expect-version`` did not match: someone else wrote first."""

    def __init__(self, env: str, expected: int, actual: int):
        self.env, self.expected, self.actual = env, expected, actual
        super().__init__(f"version conflict on environment {env}: expected version "
                         f"{expected}, Redis has {actual} (someone else pushed; re-run diff)")


class ApprovalRequired(Exception):
    """A direct write to a protected environment (DESIGN §10, exit 7): nothing written."""

    def __init__(self, env: str, approvals: int, hint: str = "use flagedge propose"):
        self.env, self.approvals = env, approvals
        super().__init__(f"approval required: {hint} (environment {env} is protected: "
                         f"changes need {approvals} approval{'s' if approvals != 1 else ''})")


class HistoryTooShort(LookupError):
    """The change log (capped) no longer reaches the requested version."""


class NotReplicated(Exception):
    """``WAIT``: fewer replicas than asked acknowledged the write in time. The write itself
    is done on the primary and stays; a failover before it replicates can lose it."""

    def __init__(self, wanted: int, acked: int, timeout_ms: int):
        self.wanted, self.acked, self.timeout_ms = wanted, acked, timeout_ms
        super().__init__(
            f"only {acked} of {wanted} replicas acknowledged the write within {timeout_ms} ms "
            "(Redis WAIT); it is written on the primary and stays written, but a failover "
            "before it reaches a replica can lose it")



@dataclass(frozen=True, slots=True)
class RemoteState:
    """One environment as stored, read atomically with the change stream's last id."""

    env: str
    raw_flags: dict[str, bytes]
    meta: dict[str, str]
    last_id: str

    @property
    def version(self) -> int:
        return int(self.meta.get("version", 0))

    @property
    def epoch(self) -> str:
        return self.meta.get("epoch", "")

    @property
    def exists(self) -> bool:
        return "version" in self.meta

    @property
    def fractional_hash(self) -> FractionalHash:
        """The environment's hashing generation (DESIGN §9; unset: v2). Raises ValueError on
        a value this flagedge does not know."""
        return FractionalHash.parse(self.meta.get("fractional_hash") or DEFAULT_FRACTIONAL_HASH)

    def document(self, strict: bool = False) -> Document:
        """The stored state as a Document. A flag whose stored JSON does not parse (written
        by another tool) becomes ``{"$unparsable": raw}`` so a push of a good file replaces
        it; ``strict=True`` (export) raises InvalidDocument naming every such flag."""
        flags: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, raw in self.raw_flags.items():
            try:
                flags[key] = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                flags[key] = {UNPARSABLE: raw.decode(errors="replace")}
                problems.append(Problem(f"flags.{key}", f"stored JSON is invalid: {exc}"))
        extra = {}
        for name in ("evaluators", "metadata"):
            try:
                extra[name] = orjson.loads(self.meta.get(name) or "{}")
            except orjson.JSONDecodeError as exc:
                extra[name] = {UNPARSABLE: self.meta.get(name, "")}
                problems.append(Problem(name, f"stored JSON is invalid: {exc}"))
        if problems and strict:
            raise InvalidDocument([Problem(f"redis {self.env}: {p.path}", p.message)
                                   for p in problems])
        return Document(flags, extra["evaluators"], extra["metadata"])


@dataclass(frozen=True, slots=True)
class PushResult:
    status: str  # ok | noop
    env: str
    version: int
    epoch: str
    plan: Plan
    stream_id: str | None = None


def read_state(client: Any, env: str) -> RemoteState:
    layout.check_env(env)
    snapshot = layout.parse_snapshot(client.eval(layout.SNAPSHOT_LUA, 3, *layout.env_keys(env)))
    return RemoteState(env, snapshot.flags, snapshot.meta, snapshot.last_id)


def parse_file(path: Path | str) -> Document:
    """Read, parse and validate a flag document; raises InvalidDocument with every problem
    (paths prefixed by the file name) or OSError."""
    data = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
    return parse_document(data, source=str(path))


def parse_document(data: bytes, *, source: str) -> Document:
    try:
        doc = load_document(data)
    except InvalidDocument as exc:
        raise InvalidDocument([_prefixed(source, p) for p in exc.problems]) from None
    problems = validate_document(doc)
    if not problems:
        try:
            compile_document(doc)
        except InvalidDocument as exc:
            problems = exc.problems
    if problems:
        raise InvalidDocument([_prefixed(source, p) for p in problems])
    return Document.from_json(doc)


def _prefixed(source: str, p: Problem) -> Problem:
    return Problem(f"{source}: {p.path}" if p.path else source, p.message)


def diff(client: Any, env: str, new: Document) -> tuple[RemoteState, Plan]:
    """The stored state and what ``new`` changes in it; raises InvalidDocument when ``new``
    does not fit the environment's hashing generation (:func:`check_generation`)."""
    state = read_state(client, env)
    check_generation(state, new)
    return state, make_plan(state.document(), new)


def check_generation(state: RemoteState, new: Document) -> None:
    """A document declaring another ``$fractionalHash`` than the environment's is refused (a
    push never switches hashing: ``flagedge envs set``); one validated as v2 is validated
    again for a v3 environment, whose ``fractional`` refuses more (a ``50.0`` weight)."""
    generation = state.fractional_hash
    if new.fractional_hash is not None and new.fractional_hash is not generation:
        raise InvalidDocument([Problem(FRACTIONAL_HASH_KEY, (
            f"the document declares {new.fractional_hash.value} but environment {state.env} "
            f"hashes {generation.value}; switch it with `flagedge envs set {state.env} "
            f"--fractional-hash {new.fractional_hash.value} --yes` (it re-buckets users) or "
            "drop the key"))])
    if generation is not DEFAULT_FRACTIONAL_HASH:
        try:
            compile_document(new.to_json(), fractional_hash=generation)
        except InvalidDocument as exc:
            raise InvalidDocument([Problem(p.path, f"{p.message} (environment {state.env} "
                                           f"hashes {generation.value})")
                                   for p in exc.problems]) from None


def write(client: Any, env: str, plan: Plan, *, expect_version: int | None = None,
          author: str = "", message: str = "", op: str = "",
          maxlen: int = layout.DEFAULT_MAXLEN,
          fractional_hash: FractionalHash | None = None,
          guard: Mapping[str, str] | None = None) -> PushResult:
    """Apply a plan (and a new hashing generation, if given) in one Lua script. Only the
    plan's changes are sent; the script skips any that already hold, so a stale plan never
    reverts someone else's other flags.
    ``guard`` (the CLI's writes, DESIGN §10): the same script refuses the write
    (ApprovalRequired) where the environment is protected, unless ``guard`` holds a mark for
    the change entry (``{"kill": "1"}``, ``{"break_glass": "1"}``), which lets it through."""
    layout.check_env(env)
    args = write_args(plan, expect_version=expect_version, author=author, message=message,
                      op=op, maxlen=maxlen, fractional_hash=fractional_hash)
    if guard is not None:
        reply = client.eval(stored_requests.GUARDED_WRITE_LUA, 5,
                            *stored_requests.guarded_keys(env),
                            *stored_requests.guarded_write_args(guard, bool(guard)), *args)
    else:
        reply = client.eval(layout.WRITE_LUA, 4, *layout.write_keys(env), *args)
    return write_result(client, env, plan, reply, expect_version)


def write_result(client: Any, env: str, plan: Plan, reply: Any,
                 expect_version: int | None) -> PushResult:
    """WRITE_LUA's (or GUARDED_WRITE_LUA's) reply as a PushResult; raises ApprovalRequired
    or ConflictError for the replies that wrote nothing."""
    if text(reply[0]) == "approval_required":
        raise ApprovalRequired(env, int(reply[1]))
    status, version, epoch = text(reply[0]), int(reply[1]), text(reply[2])
    if status == "conflict":
        raise ConflictError(env, expect_version or 0, version)
    if status == "ok":
        register_env(client, env)
        return PushResult("ok", env, version, epoch, plan, text(reply[3]))
    return PushResult("noop", env, version, epoch, plan)


def write_args(plan: Plan, *, expect_version: int | None = None, author: str = "",
               message: str = "", op: str = "", maxlen: int = layout.DEFAULT_MAXLEN,
               fractional_hash: FractionalHash | None = None) -> list[Any]:
    """WRITE_LUA's ARGV for a plan: the one place they are built (the apply script of
    change requests runs the same write with them)."""
    upserts = plan.upserts()
    args: list[Any] = [
        "" if expect_version is None else str(expect_version),
        secrets.token_hex(8), author, message, str(maxlen), op,
        canonical(plan.evaluators[1]) if plan.evaluators else "",
        canonical(plan.metadata[1]) if plan.metadata else "",
        str(len(upserts)),
        "" if fractional_hash is None else fractional_hash.value,
    ]
    for key, value in sorted(upserts.items()):
        args += [key, value]
    args += sorted(plan.removed)
    return args


def push(client: Any, env: str, new: Document, *, expect_version: int | None = None,
         author: str = "", message: str = "") -> PushResult:
    state, plan = diff(client, env, new)
    if expect_version is not None and state.version != expect_version:
        raise ConflictError(env, expect_version, state.version)
    return write(client, env, plan, expect_version=expect_version, author=author,
                 message=message)


def set_fractional_hash(client: Any, env: str, generation: FractionalHash, *,
                        expect_version: int | None = None, author: str = "",
                        message: str = "", guard: Mapping[str, str] | None = None,
                        ) -> PushResult:
    """Switch the environment's ``fractional`` hashing (DESIGN §9): a versioned change like a
    push (one script: meta field, version, change entry with ``fractional_hash`` before and
    after), which every replica and stream follows. It re-buckets users; the CLI asks first.
    Raises LookupError for an environment that does not exist."""
    state = read_state(client, env)
    if not state.exists:
        raise LookupError(f"environment {env} does not exist in Redis")
    if expect_version is not None and state.version != expect_version:
        raise ConflictError(env, expect_version, state.version)
    empty = make_plan(state.document(), state.document())
    return write(client, env, empty, expect_version=expect_version, author=author,
                 message=message or f"fractional hashing {generation.value}",
                 fractional_hash=generation, guard=guard)


def register_env(client: Any, env: str) -> None:
    ensure_secret(client)
    if client.sadd(layout.ENVS, env):
        client.xadd(layout.EVENTS, {"type": "env", "op": "created", "env": env},
                    maxlen=layout.EVENTS_MAXLEN, approximate=True)


def wait_replicas(client: Any, replicas: int, timeout_ms: int) -> int:
    """Block until ``replicas`` replicas acknowledged every write this client made (Redis
    ``WAIT``), at most ``timeout_ms``; raises NotReplicated when fewer did. WAIT counts the
    writes of its own connection: call it on the client that wrote, from the thread that
    wrote (a sync redis-py client used by one thread hands back the same connection)."""
    acked = int(client.wait(replicas, timeout_ms))
    if acked < replicas:
        raise NotReplicated(replicas, acked, timeout_ms)
    return acked


def list_envs(client: Any) -> list[dict[str, Any]]:
    out = []
    for env in sorted(text(e) for e in client.smembers(layout.ENVS)):
        meta = client.hgetall(layout.meta_key(env))
        meta = {text(k): text(v) for k, v in meta.items()}
        out.append({
            "env": env, "version": int(meta.get("version", 0)), "epoch": meta.get("epoch", ""),
            "flags": client.hlen(layout.flags_key(env)),
            "updated_at": float(meta["updated_at"]) if "updated_at" in meta else None,
            "updated_by": meta.get("updated_by", ""),
            "fractional_hash": meta.get("fractional_hash") or DEFAULT_FRACTIONAL_HASH.value,
            "policy": policy.read(client, env).to_json(),
        })
    return out


def delete_env(client: Any, env: str) -> int:
    """Delete an environment's data, unregister and announce it. Returns its last version."""
    layout.check_env(env)
    version = int(client.eval(layout.DELETE_LUA, 3, *layout.env_keys(env)))
    client.srem(layout.ENVS, env)
    client.xadd(layout.EVENTS, {"type": "env", "op": "deleted", "env": env},
                maxlen=layout.EVENTS_MAXLEN, approximate=True)
    return version


def export(client: Any, env: str) -> bytes:
    """The flagd document for ``env``: sorted keys, 2-space indent, trailing newline, so the
    same state always exports to the same bytes."""
    state = read_state(client, env)
    if not state.exists:
        raise LookupError(f"environment {env} does not exist in Redis")
    return exported(state)


def exported(state: RemoteState) -> bytes:
    """``state`` as :func:`export` writes it (the admin API serves it with its version)."""
    doc = {"$schema": SCHEMA_URL, **state.document(strict=True).to_json()}
    if state.fractional_hash is not DEFAULT_FRACTIONAL_HASH:  # a file served as it is here
        doc[FRACTIONAL_HASH_KEY] = state.fractional_hash.value
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def history_json(record: ChangeRecord) -> dict[str, Any]:
    """One change record as ``flagedge history --json`` prints it."""
    after = record.after or {}
    return {
        "version": record.version, "at": record.at, "author": record.author,
        "message": record.message, "op": record.op, "flags": record.flags,
        "evaluators_changed": "$evaluators" in after,
        "metadata_changed": "metadata" in after, "id": record.id,
        "fractional_hash": after.get("fractional_hash"),
        "readable": record.readable,
        "request": record.request, "approvers": list(record.approvers),
        "kill": record.kill, "break_glass": record.break_glass,
        "applied_by": record.applied_by or None,
    }


def release_marks(record: ChangeRecord) -> str:
    """How a write got past release control, for ``history``: ``[break-glass]``,
    ``[kill]``, ``[request 4, approved by bob, cid]``, ``[scheduler on behalf of ann]``;
    "" for an ordinary write."""
    marks = []
    if record.applied_by:
        marks.append(f"{record.applied_by} on behalf of {record.author}")
    if record.break_glass:
        marks.append("break-glass")
    if record.kill:
        marks.append("kill")
    if record.request is not None:
        marks.append(f"request {record.request}" + (
            f", approved by {', '.join(record.approvers)}" if record.approvers else ""))
    return " ".join(f"[{m}]" for m in marks)


def history(client: Any, env: str, limit: int | None = None) -> list[ChangeRecord]:
    """Newest first. An unreadable before/after (another tool stored bad JSON) is listed:
    rollback refuses to undo through it."""
    layout.check_env(env)
    rows = client.xrevrange(layout.changes_key(env), "+", "-", count=limit)
    return [changes.parse(i, f) for i, f in rows]


def state_at(client: Any, env: str, version: int) -> tuple[RemoteState, Document]:
    """The environment's document as it was at ``version``: start from the current state
    and undo each change newer than it, newest first, using each entry's ``before``."""
    state = read_state(client, env)
    if not state.exists:
        raise LookupError(f"environment {env} does not exist in Redis")
    if version < 0 or version > state.version:
        raise LookupError(f"environment {env} has versions 0..{state.version}; "
                          f"cannot roll back to {version}")
    doc = state.document().to_json()
    expected = state.version
    oldest = None
    if expected > version:
        for entry_id, fields in client.xrevrange(layout.changes_key(env), state.last_id, "-"):
            record = changes.parse(entry_id, fields)
            if record.version > expected:  # written after our snapshot: not ours to undo
                continue
            if record.version != expected or record.epoch not in ("", state.epoch):
                break
            if record.before is None:
                raise HistoryTooShort(
                    f"cannot roll back environment {env} to version {version}: the change "
                    f"entry of version {record.version} is unreadable (bad JSON stored by "
                    "another tool)")
            oldest = record.version
            doc = changes.undo(doc, record.before)
            expected -= 1
            if expected == version:
                break
    if expected != version:
        reach = f"back to version {oldest - 1}" if oldest else "no older versions"
        raise HistoryTooShort(
            f"cannot roll back environment {env} to version {version}: the change log "
            f"(capped, and reset when Redis loses data) only reaches {reach}")
    return state, Document(doc["flags"], doc.get("$evaluators") or {}, doc.get("metadata") or {})


def rollback_plan(client: Any, env: str, version: int) -> tuple[RemoteState, Plan]:
    """What rolling back to ``version`` changes; raises InvalidDocument when that version's
    rules do not validate today (they are never written unchecked)."""
    state, target = state_at(client, env, version)
    parse_document(orjson.dumps(target.to_json()), source=f"{env} version {version}")
    return state, make_plan(state.document(), target)


def rollback(client: Any, env: str, version: int, *, author: str = "",
             message: str = "") -> PushResult:
    """A new version whose state equals ``version``'s; fails on a concurrent write."""
    state, plan = rollback_plan(client, env, version)
    return write(client, env, plan, expect_version=state.version, author=author,
                 message=message or f"rollback to version {version}", op="replace")
