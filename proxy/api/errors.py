"""OFREP-shaped error responses. Every error the API returns is JSON with an ``errorCode``
(OFREP codes, plus a few HTTP-level ones) and ``errorDetails``."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from proxy.model import ErrorCode

JSON_TYPE = "application/json"


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSON_TYPE)


def ofrep_error(status: int, code: ErrorCode | str, details: str, *, key: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
    """``{key?, errorCode, errorDetails}``: the single-flag failure shape when ``key`` is given,
    the bulk failure shape otherwise."""
    body: dict[str, str] = {}
    if key is not None:
        body["key"] = key
    body["errorCode"] = str(code)
    body["errorDetails"] = details
    return json_response(body, status, headers)


def parse_error(details: str) -> Response:
    """400 ``{errorCode: PARSE_ERROR, errorDetails}``: a request body that is not what the
    endpoint takes (the message names the JSON path)."""
    return ofrep_error(400, "PARSE_ERROR", details)


def unauthorized(details: str) -> Response:
    return ofrep_error(401, "UNAUTHORIZED", details, headers={"WWW-Authenticate": "Bearer"})


def forbidden(details: str) -> Response:
    return ofrep_error(403, "FORBIDDEN", details)


def too_many_requests(retry_after: int) -> Response:
    return ofrep_error(429, "RATE_LIMITED", f"rate limit exceeded; retry in {retry_after}s",
                       headers={"Retry-After": str(retry_after)})


def payload_too_large(limit: int) -> Response:
    return ofrep_error(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")


def unavailable(details: str, retry_after: int = 1) -> Response:
    return ofrep_error(503, ErrorCode.GENERAL, details, headers={"Retry-After": str(retry_after)})


class JsonBytes(Response):
    """A JSON body that is already bytes: builds its two or three headers directly (the hot
    path answers thousands of these a second; Response's generic header handling is slower)."""

    def __init__(self, body: bytes, etag: str | None = None):
        self.status_code = 200
        self.background = None
        self.body = body
        headers = [(b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/json")]
        if etag is not None:
            headers.append((b"etag", etag.encode()))
        self.raw_headers = headers
