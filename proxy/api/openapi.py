"""``GET /openapi.json``: the API as served — OFREP's schema (open-feature/protocol
``service/openapi.yaml``) widened where flagedge is more permissive (reason DEFAULT/ERROR,
nullable ``variant``, optional ``value``, optional ``targetingKey``), plus eventStreams,
the stream, health, metrics and admin endpoints (release control's: ``openapi_admin``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.admin import VERSION
from proxy.api.errors import json_response
from proxy.api.openapi_admin import ADMIN_ERROR, release_paths

REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_AUTH_ERRORS: dict[str, Any] = {
    "401": _json("authError", "Missing, unknown or revoked API key"),
    "403": _json("authError", "The key's kind may not use this endpoint"),
    "413": _json("authError", "Request body over the size limit (default 64 KiB)"),
    "429": {
        "description": "Per-key rate limit reached",
        "headers": {"Retry-After": {"description": "Whole seconds to wait",
                                    "schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": _ref("authError")}},
    },
    "503": _json("generalErrorResponse", "No rules loaded yet (source unreachable)"),
}

_KEY_PARAM = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_BODY = {"content": {"application/json": {"schema": _ref("evaluationRequest")}}}
_VALUE_TYPES = [{"type": "boolean"}, {"type": "string"}, {"type": "integer"},
                {"type": "number"}, {"type": "object"}, {"type": "array"}]

SCHEMAS: dict[str, Any] = {
    "context": {
        "type": "object",
        "description": "Evaluation context; may be empty. targetingKey, when given, is a string.",
        "properties": {"targetingKey": {"type": "string"}},
        "additionalProperties": True,
    },
    "evaluationRequest": {"type": "object", "properties": {"context": _ref("context")}},
    "bulkEvaluationRequest": {"type": "object", "properties": {"context": _ref("context")}},
    "key": {"type": "string", "description": "Feature flag key", "examples": ["my-flag"]},
    "errorDetails": {"type": "string"},
    "metadata": {
        "type": "object",
        "additionalProperties": {"oneOf": [{"type": "boolean"}, {"type": "string"},
                                           {"type": "number"}]},
    },
    "evaluationSuccess": {
        "type": "object",
        "description": "Flag evaluation result. `value` is omitted (never null) and `variant` is "
                       "null when the client must use its code default (DISABLED flag, or no "
                       "defaultVariant).",
        "required": ["key", "reason", "variant"],
        "properties": {
            "key": _ref("key"),
            "reason": {"type": "string",
                       "enum": ["STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED", "SPLIT",
                                "UNKNOWN", "ERROR"]},
            "variant": {"type": ["string", "null"]},
            "value": {"oneOf": _VALUE_TYPES},
            "metadata": _ref("metadata"),
        },
    },
    "serverEvaluationSuccess": {"allOf": [_ref("evaluationSuccess"), {
        "properties": {"cacheable": {"type": "boolean"}}}]},
    "evaluationFailure": {
        "type": "object",
        "required": ["key", "errorCode"],
        "properties": {
            "key": _ref("key"),
            "errorCode": {"type": "string",
                          "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT",
                                   "GENERAL"]},
            "errorDetails": _ref("errorDetails"),
        },
    },
    "flagNotFound": {
        "type": "object",
        "required": ["key", "errorCode"],
        "properties": {"key": _ref("key"), "errorCode": {"type": "string",
                                                         "enum": ["FLAG_NOT_FOUND"]},
                       "errorDetails": _ref("errorDetails")},
    },
    "eventStream": {
        "type": "object",
        "required": ["type", "endpoint"],
        "properties": {
            "type": {"type": "string", "enum": ["sse"]},
            "endpoint": {"type": "object", "required": ["requestUri"],
                         "properties": {"requestUri": {"type": "string"}}},
            "inactivityDelaySec": {"type": "integer", "minimum": 0},
        },
    },
    "bulkEvaluationSuccess": {
        "type": "object",
        "required": ["flags"],
        "properties": {
            "flags": {"type": "array", "items": {"oneOf": [_ref("evaluationSuccess"),
                                                           _ref("evaluationFailure")]}},
            "metadata": _ref("metadata"),
            "eventStreams": {"type": "array", "items": _ref("eventStream")},
        },
    },
    "bulkEvaluationFailure": {
        "type": "object",
        "required": ["errorCode"],
        "properties": {"errorCode": {"type": "string"}, "errorDetails": _ref("errorDetails")},
    },
    "generalErrorResponse": {"type": "object", "properties": {
        "errorCode": {"type": "string"}, "errorDetails": _ref("errorDetails")}},
    "authError": {"type": "object", "required": ["errorCode"], "properties": {
        "errorCode": {"type": "string",
                      "enum": ["UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED", "PAYLOAD_TOO_LARGE"]},
        "errorDetails": _ref("errorDetails")}},
    "explainResponse": {"type": "object", "properties": {
        "env": {"type": "string"}, "version": {"type": "integer"},
        "fractionalHash": {"type": "string", "enum": ["v2", "v3"],
                           "description": "How the environment's fractional rules hash "
                                          "(flagedge envs set ENV --fractional-hash)"},
        "result": {"oneOf": [_ref("evaluationSuccess"), _ref("evaluationFailure")]},
        "path": {"type": "array", "items": {"type": "string"},
                 "description": "Rule path taken: if branches, fractional bucket/hash, $refs"},
        "context": _ref("context"), "flag": {"type": "object"}}},
    "adminError": ADMIN_ERROR,
    "health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
        "reason": {"type": "string", "description": "A short fixed phrase ('redis "
                   "unreachable', 'stale: 2 environments'); the details are in the log"},
        "envs": {"type": "object", "additionalProperties": {"type": "integer"},
                 "description": "Version per environment: only to whom may read /metrics "
                                "(metrics_key; with admin_port, on that port only)"}}},
}

_KEY_QUERY = {"in": "query", "name": "key", "required": False, "schema": {"type": "string"},
              "description": "A client key (EventSource cannot send headers); server and "
                             "admin keys are refused here (401): send them in a header"}

_NOT_MODIFIED_PARAMS = [
    {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
     "description": "ETag of a previous bulk response: 304 if still current"},
    {"in": "query", "name": "flagConfigEtag", "required": False, "schema": {"type": "string"},
     "description": "Rules version from a change notification; waits up to 500 ms to catch up"},
    {"in": "query", "name": "flagConfigLastModified", "required": False,
     "schema": {"type": "integer", "minimum": 0}},
]


def _stream(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {
        "tags": ["flagedge streams"], "summary": summary,
        "parameters": [*params, _KEY_QUERY,
                       {"in": "header", "name": "Last-Event-ID", "required": False,
                        "schema": {"type": "string"}, "description": "Version to resume from"}],
        "responses": {"200": {"description": "text/event-stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "400": _json("bulkEvaluationFailure", "Bad context"), **_AUTH_ERRORS}}}


def _ofrep_paths() -> dict[str, Any]:
    """OFREP's own paths, as open-feature/protocol describes them, and its events extension."""
    single = {"post": {
        "tags": ["OFREP core"], "summary": "OFREP single flag evaluation",
        "parameters": [_KEY_PARAM], "requestBody": _BODY,
        "responses": {"200": _json("serverEvaluationSuccess", "Evaluation result"),
                      "400": _json("evaluationFailure", "Bad request or rule failure"),
                      "404": _json("flagNotFound", "Flag not found"), **_AUTH_ERRORS}}}
    bulk = {"post": {
        "tags": ["OFREP core"], "summary": "OFREP bulk evaluation",
        "parameters": _NOT_MODIFIED_PARAMS,
        "requestBody": {"content": {"application/json": {"schema": _ref("bulkEvaluationRequest")}}},
        "responses": {
            "200": {**_json("bulkEvaluationSuccess", "Every flag of the key's environment"),
                    "headers": {"ETag": {"schema": {"type": "string"}, "description":
                                         "Strong hash of the flag results (same on every replica)"}}},
            "304": {"description": "Results unchanged since If-None-Match"},
            "400": _json("bulkEvaluationFailure", "Bad request"), **_AUTH_ERRORS}}}
    events = {"get": {
        "tags": ["OFREP extensions"], "summary": "Change notifications (SSE, OFREP ADR-0008)",
        "parameters": [{"in": "query", "name": "token", "required": False,
                        "schema": {"type": "string"}, "description":
                        "Signed stream token from the bulk response's eventStreams: opens "
                        "this stream only, while its key is live, for 1-2 x stream_token_ttl"},
                       _KEY_QUERY],
        "responses": {"200": {"description": "text/event-stream of refetchEvaluation messages",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **_AUTH_ERRORS}}}
    return {
        "/ofrep/v1/evaluate/flags/{key}": single,
        "/ofrep/v1/evaluate/flags": bulk,
        "/ofrep/v1/events": events,
        "/ofrep/v1/configuration": {"get": {
            "tags": ["OFREP extensions"], "summary": "Provider configuration",
            "responses": {"200": {"description": "name and capabilities",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}}, **_AUTH_ERRORS}}},
    }


def _flagedge_paths() -> dict[str, Any]:
    """flagedge's own surfaces: admin, streams and operations."""
    explain = {"post": {
        "tags": ["flagedge admin"], "summary": "Evaluation plus the rule path taken",
        "parameters": [_KEY_PARAM], "requestBody": _BODY,
        "responses": {"200": _json("explainResponse", "Explanation"),
                      "404": _json("flagNotFound", "Flag not found"), **_AUTH_ERRORS}}}
    health = {"get": {"tags": ["ops"], "responses": {
        "200": _json("health", "Serving"), "503": _json("health", "No rules loaded")}}}
    return {
        "/v1/explain/{key}": explain,
        "/v1/envs": {"get": {
            "tags": ["flagedge admin"],
            "summary": "Environments served: version, epoch, flag count, source status "
                       "(server key: its own; admin key: all)",
            "responses": {"200": {"description": "environments",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}}, **_AUTH_ERRORS}}},
        "/v1/rules": {"get": {
            "tags": ["flagedge streams"], "summary": "The key's flagd document (server keys)",
            "parameters": [_NOT_MODIFIED_PARAMS[0]],
            "responses": {"200": {"description": "flagd flag-definition document",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}},
                          "304": {"description": "Unchanged since If-None-Match"},
                          **_AUTH_ERRORS}}},
        "/v1/stream/evaluated": _stream(
            "Values for one context, pushed (put, then patch/delete)", [
                {"in": "query", "name": "context", "required": False,
                 "schema": {"type": "string"}, "description": "base64url JSON object"}]),
        "/v1/stream/rules": _stream("The flagd document, pushed (server keys)", []),
        **_insights_paths(),
        **release_paths(_AUTH_ERRORS),
        "/healthz": {"get": {"tags": ["ops"], "responses": {"200": _json("health", "Up")}}},
        "/readyz": health,
        "/metrics": {"get": {
            "tags": ["ops"], "security": [{"BearerAuth": []}, {}],
            "description": "Open unless metrics_key is set (then 'Authorization: Bearer "
                           "<metrics_key>'); with admin_port set, served on that port only",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "401": _json("authError", "metrics_key missing or wrong")}}},
    }


def _object(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"type": "object"}}}}


def _insights_paths() -> dict[str, Any]:
    """Insights (DESIGN §11): exposures and tracking in, results out (admin keys)."""
    def admin(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"tags": ["flagedge insights"], "summary": summary, "parameters": params,
                        "responses": {"200": _object("as `flagedge insights ... --json`"),
                                      "400": _object("bad parameter"),
                                      "404": _object("no such flag or not an experiment"),
                                      **_AUTH_ERRORS}}}

    def query(name: str, required: bool = False) -> dict[str, Any]:
        return {"in": "query", "name": name, "required": required, "schema": {"type": "string"}}

    return {
        "/v1/exposures": {"post": {
            "tags": ["flagedge insights"], "requestBody": {"content": {"application/json": {
                "schema": {"type": ["object", "array"]}}}},
            "summary": "In-process evaluations reported by a provider (server keys)",
            "responses": {"202": _object("{accepted, ignored}"), "400": _object("bad report"),
                          **_AUTH_ERRORS}}},
        "/v1/track": {"post": {
            "tags": ["flagedge insights"], "requestBody": {"content": {"application/json": {
                "schema": {"type": ["object", "array"]}}}},
            "summary": "Tracked events (OpenFeature track; client keys)",
            "responses": {"202": _object("{accepted}"), "400": _object("bad events"),
                          "503": _object("insights off (no Redis)"), **_AUTH_ERRORS}}},
        "/v1/admin/insights/flags": admin("Exposures per flag and variant", [query("since")]),
        "/v1/admin/insights/stale": admin("Stale flags", [query("unused")]),
        "/v1/admin/insights/experiments/{key}": admin(
            "An experiment's results", [_KEY_PARAM, query("event", True)]),
        "/v1/admin/insights/live": {"get": {
            "tags": ["flagedge insights"], "parameters": [query("minutes")],
            "summary": "Per-minute exposures per flag and variant, pushed (SSE: put, minute)",
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {
                                      "type": "string"}}}},
                          "400": _object("bad minutes"), **_AUTH_ERRORS}}},
    }


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "flagedge (OFREP superset)", "version": VERSION,
                 "description": "OpenFeature Remote Evaluation Protocol, as served by flagedge."},
        "servers": [{"url": "/"}],
        "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
        "paths": {**_ofrep_paths(), **_flagedge_paths()},
        "components": {
            "securitySchemes": {
                "BearerAuth": {"type": "http", "scheme": "bearer"},
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": SCHEMAS,
        },
    }


class OpenApi:
    def __init__(self) -> None:
        self._spec = build_spec()

    def routes(self) -> list[Route]:
        return [Route("/openapi.json", self.endpoint, methods=["GET"])]

    async def endpoint(self, _request: Request) -> Response:
        return json_response(self._spec)
