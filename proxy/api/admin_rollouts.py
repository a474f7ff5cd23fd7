"""Progressive rollouts over the admin API (DESIGN §10, ``flagedge rollout``):

- ``GET /v1/admin/envs/{env}/rollouts``: every flag's rollout, as ``--status --json`` shows
  one;
- ``GET .../rollouts/{key}``: one;
- ``POST .../rollouts/{key}`` ``{variant, steps: [5, 25, 50, 100], every: "1h", start?,
  message?, break_glass?}``: start one (200 applied; 202 with the change request it became
  where the environment is protected);
- ``POST .../rollouts/{key}/pause`` and ``/abort`` ``{message?}``: the kill operations,
  applied at once by a ``kill`` holder.

Every call goes through ``proxy.release.rollout`` with the key's name and roles, exactly as
the CLI does.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.admin_calls import AdminCalls, BadField, Call, Json, field
from proxy.api.admin_release import write_fields
from proxy.release import review, rollout
from proxy.release.times import parse_duration, parse_time
from proxy.storage import rollouts as stored

BASE = "/v1/admin/envs/{env}/rollouts"


class RolloutsApi:
    def __init__(self, calls: AdminCalls):
        self.calls = calls

    def routes(self) -> list[Route]:
        route = self.calls.route
        one = BASE + "/{key:path}"
        # pause/abort first: "{key:path}" would swallow the suffix
        return [route(BASE, self.list, "GET"),
                route(BASE + "/{key:path}/pause", self.pause, "POST", body=True),
                route(BASE + "/{key:path}/abort", self.abort, "POST", body=True),
                route(one, self.status, "GET"),
                route(one, self.start, "POST", body=True)]

    def list(self, client: Any, call: Call) -> list[Any]:
        return [rollout.status(client, call.env, key, call.actor)
                for key in sorted(stored.read_all(client, call.env))]

    def status(self, client: Any, call: Call) -> Json:
        return rollout.status(client, call.env, call.param("key"), call.actor)

    def start(self, client: Any, call: Call) -> Json | Response:
        body = call.body
        variant = field(body, "variant", str, required=True)
        steps = field(body, "steps", list, required=True)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
            raise BadField("steps: expected a list of whole percentages")
        every = field(body, "every", (str, int), required=True)
        # (the steps' and the period's values are checked by release/, as for the CLI: 422)
        seconds = float(every) if isinstance(every, int) else parse_duration(every)
        start = field(body, "start", str)
        start_at = parse_time(start, review.redis_now(client, call.env)) if start else None
        message, glass = write_fields(body)
        written = rollout.start(client, call.env, call.param("key"), variant=variant,
                                steps=tuple(steps), every=seconds, actor=call.actor,
                                start_at=start_at, message=message, break_glass=glass)
        return self._answer(call, written)

    def pause(self, client: Any, call: Call) -> Json | Response:
        message, _glass = write_fields(call.body)
        return self._answer(call, rollout.pause(client, call.env, call.param("key"),
                                                actor=call.actor, message=message))

    def abort(self, client: Any, call: Call) -> Json | Response:
        message, _glass = write_fields(call.body)
        return self._answer(call, rollout.abort(client, call.env, call.param("key"),
                                                actor=call.actor, message=message))

    def _answer(self, call: Call, written: rollout.Written) -> Json | Response:
        if written.status == "proposed":
            assert written.request is not None
            self.calls.audit(call, "propose", request=written.request.id)
            return errors.json_response(written.to_json(), 202)
        if written.status == "ok":
            self.calls.audit(call, f"rollout {written.flag}: {written.summary}",
                             version=written.version, marks=",".join(written.marks) or None)
        return written.to_json()
