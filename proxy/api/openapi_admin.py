"""The admin API's release-control paths in ``/openapi.json`` (DESIGN §10; the handlers:
``admin_release``, ``admin_flags``, ``admin_requests``, ``admin_rollouts``, ``admin_webhooks``, ``admin_keys``).
Every answer an operation can give is listed, so a client (and the schemathesis test) can
rely on the document."""

from __future__ import annotations

from typing import Any

TAG = "flagedge release control"
BASE = "/v1/admin/envs/{env}"

ADMIN_ERROR: dict[str, Any] = {
    "type": "object", "required": ["errorCode", "errorDetails"],
    "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"},
                   "problems": {"type": "array", "items": {"type": "object", "properties": {
                       "path": {"type": "string"}, "message": {"type": "string"}}}},
                   "next": {"type": "string"}},
    "description": "errorCode: PARSE_ERROR (400), FORBIDDEN (403: the missing role named), "
                   "NOT_FOUND (404), APPROVAL_REQUIRED / CONFLICT / NOT_OPEN / EXPIRED (409), "
                   "INVALID_DOCUMENT (422, with every problem's path) / INVALID (422)"}

_ENV = {"name": "env", "in": "path", "required": True, "schema": {"type": "string"}}
_FLAG = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_REQUEST = {"name": "id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_WRITE = {"message": {"type": "string", "description": "what and why (change log)"},
          "break_glass": {"type": "boolean", "description": "manage holders, with a message: "
                          "applied at once in a protected environment, marked break_glass"}}
_DOCUMENT = {"type": "object", "description": "a flagd flag-definition document"}
_FLAG_OP = {"op": {"type": "string", "enum": ["default", "enable", "disable", "percent"]},
            "variant": {"type": "string"},
            "percent": {"type": "integer", "minimum": 0, "maximum": 100}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                "adminError"}}}}


def _ok(description: str, kind: str = "object") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"type": kind}}}}


def _body(properties: dict[str, Any], required: list[str] | None = None, *,
          optional: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": not optional, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, params: list[dict[str, Any]], ok: dict[str, dict[str, Any]],
        auth_errors: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    responses = {**ok, "400": _error("Malformed JSON or a body field of the wrong shape"),
                 "404": _error("No such environment, flag, request, webhook or key"),
                 **auth_errors}
    if body is not None:
        responses.update({"409": _error("Version conflict, approval required, request not "
                                        "open, or its apply conflicted / expired"),
                          "422": _error("Invalid document (with paths) or refused value")})
    out: dict[str, Any] = {"tags": [TAG], "summary": summary, "parameters": params,
                           "responses": responses}
    if body is not None:
        out["requestBody"] = body
    return out


def release_paths(auth_errors: dict[str, Any]) -> dict[str, Any]:
    """``/v1/admin/envs...`` and ``/v1/admin/keys...``; ``auth_errors``: the 401/403/413/429/
    503 answers every authenticated operation shares."""
    def op(summary: str, params: list[dict[str, Any]], ok: dict[str, dict[str, Any]],
           body: dict[str, Any] | None = None) -> dict[str, Any]:
        return _op(summary, params, ok, auth_errors, body)

    request = [_ENV, _REQUEST]
    return {
        "/v1/admin/envs": {"get": op("The key's environment: version, flags, policy", [],
                                     {"200": _ok("{envs: [...]}")})},
        f"{BASE}/document": {
            "get": op("The flagd document (ETag: its version)", [_ENV],
                      {"200": _ok("flagd document")}),
            "put": op("Push a document (If-Match: \"N\" for version N); 409 "
                      "APPROVAL_REQUIRED where protected", [_ENV, {
                          "name": "If-Match", "in": "header", "required": False,
                          "schema": {"type": "string"}}],
                      {"200": _ok("{status, version, diff, marks}")},
                      _body({"document": _DOCUMENT, **_WRITE}, ["document"]))},
        f"{BASE}/preview": {"post": op(
            "The diff and rollout impact of a document; nothing written", [_ENV],
            {"200": _ok("{base_version, diff, impact}")}, _body({"document": _DOCUMENT},
                                                                ["document"]))},
        f"{BASE}/flags/{{key}}": {
            "get": op("One flag as stored", [_ENV, _FLAG], {"200": _ok("{version, flag}")}),
            "patch": op("A one-line operation: applied (200) or, where protected, the "
                        "request it would apply (202)", [_ENV, _FLAG],
                        {"200": _ok("applied or noop"), "202": _ok("{request}")},
                        _body({**_FLAG_OP, **_WRITE}, ["op"]))},
        f"{BASE}/requests": {
            "get": op("Change requests, newest first", [_ENV, {
                "name": "state", "in": "query", "required": False,
                "schema": {"type": "string"}, "description": "open (default), all, or a "
                                                             "state"}], {"200": _ok("", "array")}),
            "post": op("Propose a document or one flag's operation", [_ENV],
                       {"201": _ok("the request")},
                       _body({"document": _DOCUMENT, "change": {
                           "type": "object", "properties": {"flag": {"type": "string"},
                                                            **_FLAG_OP}},
                           "message": {"type": "string"}, "at": {"type": "string"},
                           "expires": {"type": "string"},
                           "base_version": {"type": "integer"}}, ["message"]))},
        f"{BASE}/requests/{{id}}": {"get": op("One request", request,
                                              {"200": _ok("the request")})},
        f"{BASE}/requests/{{id}}/approve": {"post": op(
            "Approve; applied when this makes the quorum", request,
            {"200": _ok("{status, version, approvals, needed, request}")},
            _body({}, optional=True))},
        f"{BASE}/requests/{{id}}/reject": {"post": op(
            "Reject (an approver's no)", request, {"200": _ok("the request")},
            _body({"reason": {"type": "string"}}, ["reason"]))},
        f"{BASE}/requests/{{id}}/cancel": {"post": op(
            "Cancel (its author, or manage)", request, {"200": _ok("the request")},
            _body({"reason": {"type": "string"}}, optional=True))},
        f"{BASE}/history": {"get": op("The change log, newest first", [_ENV, {
            "name": "limit", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}],
            {"200": _ok("", "array")})},
        f"{BASE}/rollback": {"post": op(
            "Roll back to a version (a kill operation)", [_ENV],
            {"200": _ok("applied or noop"), "202": _ok("{request}")},
            _body({"version": {"type": "integer", "minimum": 0}, "propose": {
                "type": "boolean"}, **_WRITE}, ["version"]))},
        f"{BASE}/rollouts": {"get": op("Every flag's progressive rollout (as --status)",
                                       [_ENV], {"200": _ok("", "array")})},
        f"{BASE}/rollouts/{{key}}": {
            "get": op("One flag's rollout: state, step, percent, next boundary", [_ENV, _FLAG],
                      {"200": _ok("the rollout's status")}),
            "post": op("Start a progressive rollout: applied (200) or, where protected, the "
                       "request it would apply (202)", [_ENV, _FLAG],
                       {"200": _ok("{status, version, rollout}"), "202": _ok("{request}")},
                       _body({"variant": {"type": "string"},
                              "steps": {"type": "array", "items": {
                                  "type": "integer", "minimum": 1, "maximum": 100}},
                              "every": {"type": ["string", "integer"],
                                        "description": "30s, 5m, 1h, 2d or seconds"},
                              "start": {"type": "string", "description": "ISO 8601 with an "
                                        "offset, or +DURATION (default: now)"}, **_WRITE},
                             ["variant", "steps", "every"]))},
        f"{BASE}/rollouts/{{key}}/pause": {"post": op(
            "Freeze at the current step (a kill operation)", [_ENV, _FLAG],
            {"200": _ok("{status, version, rollout}")}, _body(
                {"message": _WRITE["message"]}, optional=True))},
        f"{BASE}/rollouts/{{key}}/abort": {"post": op(
            "Put the previous targeting back (a kill operation)", [_ENV, _FLAG],
            {"200": _ok("{status, version, rollout}")}, _body(
                {"message": _WRITE["message"]}, optional=True))},
        f"{BASE}/policy": {
            "get": op("Approvals needed and approvers", [_ENV], {"200": _ok("the policy")}),
            "put": op("Protect (approvals >= 1) or unprotect (0); manage", [_ENV],
                      {"200": _ok("the policy")},
                      _body({"approvals": {"type": "integer", "minimum": 0},
                             "approvers": {"type": "array", "items": {"type": "string"}}},
                            ["approvals"]))},
        f"{BASE}/webhooks": {
            "get": op("Webhooks (no secrets)", [_ENV], {"200": _ok("", "array")}),
            "post": op("Add a webhook; its secret shown once; manage", [_ENV],
                       {"201": _ok("the webhook with its secret")},
                       _body({"url": {"type": "string"}, "format": {
                           "type": "string", "enum": ["json", "slack"]},
                           "secret": {"type": "string"}, "allow_private": {
                           "type": "boolean"}}, ["url"]))},
        f"{BASE}/webhooks/failed": {"get": op("Deliveries given up", [_ENV, {
            "name": "limit", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            {"200": _ok("", "array")})},
        f"{BASE}/webhooks/{{id}}": {"delete": op("Remove a webhook; manage", [_ENV, _ID],
                                                 {"200": _ok("{id, removed}")})},
        f"{BASE}/webhooks/{{id}}/test": {"post": op(
            "Send a signed test message now; manage", [_ENV, _ID],
            {"200": _ok("{webhook, delivered, status, error, ms}")})},
        "/v1/admin/keys": {
            "get": op("The environment's keys (no secrets); manage", [],
                      {"200": _ok("", "array")}),
            "post": op("Create a key, shown once; manage", [], {"201": _ok("{key, id, ...}")},
                       _body({"kind": {"type": "string", "enum": ["client", "server", "admin"]},
                              "name": {"type": "string"}, "roles": {
                              "type": "array", "items": {"type": "string"}},
                              "rate_limit": {"type": "number", "exclusiveMinimum": 0}},
                             ["kind", "name"]))},
        "/v1/admin/keys/{id}": {"delete": op("Revoke a key; manage", [_ID],
                                             {"200": _ok("the revoked key")})},
    }
