"""One flag over the admin API (DESIGN §10, ``flagedge flag``):

- ``GET /v1/admin/envs/{env}/flags/{key}``: the flag as stored, with the environment's
  version;
- ``PATCH`` ``{op: default|enable|disable|percent, variant?, percent?, message?,
  break_glass?}``: the one-line operation (``release/oneliners.py``) as an ordinary
  versioned write (200); where the environment is protected, the change request it would
  apply (202), except a ``disable`` by a ``kill`` holder and a ``break_glass`` by a
  ``manage`` holder, applied at once and marked ``kill`` / ``break_glass``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.admin_calls import AdminCalls, BadField, Call, Json, field, requests_route
from proxy.api.admin_release import marks, proposed, write_fields
from proxy.release import authorization as authz
from proxy.release import oneliners, publisher, review

TRIES = 3  # re-read and redo the edit when another write landed between read and write


class FlagsApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        path = "/v1/admin/envs/{env}/flags/{key:path}"
        return [self.calls.route(path, self.flag, "GET"),
                self.calls.route(path, self.edit, "PATCH", body=True)]

    def flag(self, client: Any, call: Call) -> Json:
        key = call.param("key")
        state = publisher.read_state(client, call.env)
        raw = state.raw_flags.get(key)
        if raw is None:
            raise LookupError(f"flag {key} is not in environment {call.env}")
        return {"env": call.env, "version": state.version, "key": key,
                "flag": orjson.loads(raw)}

    def edit(self, client: Any, call: Call) -> Json | Response:
        key = call.param("key")
        op = operation(call.body)
        message, glass = write_fields(call.body)
        kind = authz.WriteKind.KILL if op.is_kill else authz.WriteKind.CHANGE
        for _ in range(TRIES):
            state = publisher.read_state(client, call.env)
            plan, change = oneliners.plan_edit(state, key, op)
            message = message or f"flag {key}: {change.summary}"
            out: Json = {"env": call.env, "flag": key, "operation": change.summary,
                         "base_version": state.version, "diff": plan.to_json(),
                         "warnings": list(change.warnings)}
            if plan.empty:
                return {**out, "status": "noop", "version": state.version}
            try:
                guard = review.write_guard(client, call.env, call.actor, kind,
                                           break_glass=glass, reason=message,
                                           hint=f"use {requests_route(call.env)}")
                if not isinstance(guard, dict):
                    return proposed(self.calls, client, call, state, plan, message, out)
                result = publisher.write(client, call.env, plan, expect_version=state.version,
                                         author=call.actor.name, message=message, guard=guard)
            except publisher.ApprovalRequired:  # protected: the request it would apply
                return proposed(self.calls, client, call, state, plan, message, out)
            except publisher.ConflictError:
                continue  # someone wrote between our read and our write: edit the new state
            self.calls.audit(call, f"flag {key} {change.summary}", version=result.version,
                             marks=marks(guard))
            return {**out, "status": result.status, "version": result.version,
                    "marks": sorted(guard)}
        raise publisher.ConflictError(call.env, state.version,
                                      publisher.read_state(client, call.env).version)


def operation(body: Json) -> oneliners.FlagOp:
    """The body's one-line operation (BadField: 400 naming the field)."""
    kind = field(body, "op", str, required=True)
    if kind not in oneliners.KINDS:
        raise BadField(f"op: one of {', '.join(oneliners.KINDS)}, not {kind!r}")
    variant = field(body, "variant", str)
    percent = field(body, "percent", int)
    if kind == "percent" and percent is None:
        raise BadField("percent: required with op percent")
    if kind == "default" and variant is None:
        raise BadField("variant: required with op default")
    if kind in ("enable", "disable") and (variant is not None or percent is not None):
        raise BadField(f"op {kind} takes no variant or percent")
    return oneliners.FlagOp(kind, variant=variant, percent=percent)
