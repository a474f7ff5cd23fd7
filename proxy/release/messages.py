"""Outbox entries as webhook messages (DESIGN §10), without I/O.

An outbox entry is either ``type change`` (a copy of the change-log entry: version, op,
before, after, author, message, at, the release marks, and ``change_id``) or ``type request``
(``event`` proposed | approved | rejected | cancelled | expired | conflict, ``request`` id,
``by``, ``body``: the request as stored after the event).

The message (``format json``) follows Standard Webhooks' recommended shape::

    {"type": "change.applied" | "request.<event>", "timestamp": "2026-...Z",
     "data": {"env", "version", "author", "approvers", "message", "diff", "impact",
              "request", "state", "by", "reason", "kill", "break_glass", "url"?}}

``diff`` is what ``push --dry-run`` prints as JSON (added, changed, removed, ...);
``impact`` the rollout impact on synthetic contexts (a request's preview, recomputed at
approval and apply; for a direct push, estimated by the delivering worker); ``url`` a link
to the management UI, only when the ``ui_url`` setting is set.
``format slack`` posts ``{"text": ...}``, a one-paragraph summary for an incoming webhook.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.release.changeset import Document, Plan
from proxy.release.preview import rollout_impact, synthetic_contexts
from proxy.release.requests import Request, plan_of


def message_id(env: str, entry_id: str) -> str:
    """The stable ``webhook-id``: the same on every attempt and from every worker."""
    return f"msg_{env}_{entry_id}"


def entry_time(entry_id: str) -> float:
    """An outbox stream id's time (Unix seconds): when the event happened, by Redis' clock."""
    return int(entry_id.split("-", 1)[0]) / 1000


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds"
                                                               ).replace("+00:00", "Z")


def change_plan(fields: Mapping[str, str]) -> Plan:
    return plan_of({"before": orjson.loads(fields["before"]),
                    "after": orjson.loads(fields["after"])})


def change_impact(fields: Mapping[str, str], evaluators: Mapping[str, Any],
                  metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rollout impact of a direct change on synthetic contexts, from the entry's own
    before/after (the touched flags) and the environment's evaluators and metadata (the
    entry's, when it changed them)."""
    before, after = orjson.loads(fields["before"]), orjson.loads(fields["after"])
    plan = change_plan(fields)
    if plan.empty:
        return []

    def side(part: Mapping[str, Any]) -> Document:
        flags = {k: v for k, v in part.get("flags", {}).items() if v is not None}
        return Document(flags, part.get("$evaluators", evaluators),
                        part.get("metadata", metadata))

    old, new = side(before), side(after)
    return [i.to_json() for i in rollout_impact(old, new, plan, synthetic_contexts())]


def build(env: str, entry_id: str, fields: Mapping[str, str], *,
          request: Request | None = None, impact: list[dict[str, Any]] | None = None,
          ui_url: str = "") -> dict[str, Any]:
    """The JSON message of one outbox entry. ``request``: the request the entry is about
    (a request event's body, or the applied request a change came from)."""
    if fields.get("type") == "change":
        data = _change_data(fields, request, impact)
        kind = "change.applied"
    else:
        if request is None:
            request = Request.from_json(fields["body"].encode())
        data = _request_data(fields, request)
        kind = f"request.{fields.get('event', request.state)}"
    data = {"env": env, **data}
    if ui_url:
        base = ui_url.rstrip("/")
        data["url"] = (f"{base}/ui/envs/{env}/requests/{data['request']}"
                       if kind.startswith("request.") else
                       f"{base}/ui/envs/{env}/history?version={data['version']}")
    return {"type": kind, "timestamp": _iso(entry_time(entry_id)), "data": data}


def _change_data(fields: Mapping[str, str], request: Request | None,
                 impact: list[dict[str, Any]] | None) -> dict[str, Any]:
    approvers = orjson.loads(fields["approvers"]) if fields.get("approvers") else []
    if impact is None and request is not None:
        impact = list(request.preview.get("impact") or [])
    return {
        "version": int(fields["version"]), "author": fields.get("author", ""),
        "approvers": approvers, "message": fields.get("message", ""),
        "diff": change_plan(fields).to_json(), "impact": impact or [],
        "request": int(fields["request"]) if fields.get("request") else None,
        "state": "applied", "by": fields.get("author", ""),
        "kill": fields.get("kill") == "1", "break_glass": fields.get("break_glass") == "1",
        "op": fields.get("op", ""),
    }


def _request_data(fields: Mapping[str, str], request: Request) -> dict[str, Any]:
    preview = request.preview or {}
    return {
        "version": request.base_version, "author": request.author,
        "approvers": request.valid_approvers(), "message": request.message,
        "diff": preview.get("diff") or {}, "impact": preview.get("impact") or [],
        "request": request.id, "state": request.state, "by": fields.get("by", ""),
        "reason": request.reason or "", "kill": False, "break_glass": False,
    }


def slack(message: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: one line of what happened, the diff in short."""
    data = message["data"]
    if message["type"] == TEST:
        return {"text": f"*{data['env']}* test delivery from flagedge, sent by {data['by']}"}
    diff = data.get("diff") or {}
    parts = [f"{name} {', '.join(diff[name])}" for name in ("added", "changed", "removed")
             if diff.get(name)]
    what = "; ".join(parts) or "no flag changes"
    if message["type"] == "change.applied":
        marks = "".join(f" [{m}]" for m in ("kill", "break_glass") if data.get(m))
        head = f"*{data['env']}* v{data['version']} by {data['author']}{marks}"
        if data.get("approvers"):
            head += f", approved by {', '.join(data['approvers'])}"
    else:
        head = (f"*{data['env']}* request {data['request']} {data['state']}"
                + (f" by {data['by']}" if data.get("by") else ""))
    text = f"{head}: {data.get('message') or '(no message)'} ({what})"
    if data.get("reason"):
        text += f" {data['reason']}"
    if data.get("url"):
        text += f" <{data['url']}>"
    return {"text": text}


TEST = "webhook.test"


def test_message(env: str, hook_id: str, by: str, now: float) -> dict[str, Any]:
    """What a test delivery sends (``flagedge notify test``, the UI's "Send test")."""
    return {"type": TEST, "timestamp": _iso(now),
            "data": {"env": env, "webhook": hook_id, "by": by,
                     "message": "A test delivery from flagedge: nothing changed."}}


def body(message: Mapping[str, Any], fmt: str) -> bytes:
    return orjson.dumps(slack(message) if fmt == "slack" else message)
