"""Request bodies and evaluation contexts: size limit, content type, JSON shape, depth.

Shared by the OFREP, admin and stream endpoints so that every surface rejects the same
inputs with the same OFREP error codes.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive

from proxy.api import errors
from proxy.model import ErrorCode

log = logging.getLogger("flagedge.api")

CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never sent


class BadContext(ValueError):
    def __init__(self, code: ErrorCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


async def read_body(receive: Receive, limit: int, declared: bytes | str | None = None
                    ) -> bytes | Response:
    """The request body, or a 413 once it exceeds ``limit`` bytes (checked on the declared
    length first, then while streaming, so a lying or chunked client cannot push more).
    A client gone before its body was complete gets a 499 response: the server drops it
    (there is no one to send it to) and the metrics count it, with no error logged."""
    if declared is not None:
        try:
            if int(declared) > limit:
                return errors.payload_too_large(limit)
        except ValueError:
            return errors.ofrep_error(400, ErrorCode.PARSE_ERROR, "bad Content-Length")
    # Read the ASGI messages directly (Request.stream's generator costs more on the hot path).
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            log.debug("client disconnected after %d body bytes", size)
            return Response(status_code=CLIENT_CLOSED)
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return errors.payload_too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def request_body(request: Any, limit: int) -> bytes | Response:
    """``read_body`` of a Starlette request (its declared length checked first)."""
    return await read_body(request.receive, limit, request.headers.get("content-length"))


def _json_content_type(value: bytes | str | None) -> bool:
    if value is None:
        return True  # bodiless calls and clients that send none: the JSON check decides
    if value == b"application/json":
        return True
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_request(body: bytes, content_type: bytes | str | None) -> dict[str, Any]:
    """``{"context": {...}}`` -> the context dict. Raises BadContext."""
    if not body.strip():
        return {}
    if not _json_content_type(content_type):
        shown = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
        raise BadContext(ErrorCode.PARSE_ERROR,
                         f"unsupported content type {shown!r}; send application/json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadContext(ErrorCode.PARSE_ERROR, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadContext(ErrorCode.PARSE_ERROR, "request body must be a JSON object")
    context = data.get("context")
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise BadContext(ErrorCode.INVALID_CONTEXT, "context must be a JSON object")
    return context


def check_context(context: dict[str, Any], max_depth: int, max_items: int) -> None:
    """Shape limits and the one typed field. Raises BadContext(INVALID_CONTEXT)."""
    tk = context.get("targetingKey")
    if tk is not None and not isinstance(tk, str):
        raise BadContext(ErrorCode.INVALID_CONTEXT, "targetingKey must be a string")
    if len(context) <= max_items and max_depth >= 1:
        # The usual flat context (parsed JSON: exact dicts and lists): one pass, no stack.
        for value in context.values():
            if value.__class__ is dict or value.__class__ is list:
                break
        else:
            return
    items = 0
    stack: list[tuple[Any, int]] = [(context, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise BadContext(ErrorCode.INVALID_CONTEXT,
                             f"context nests deeper than {max_depth} levels")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            items += 1
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
        if items > max_items:
            raise BadContext(ErrorCode.INVALID_CONTEXT,
                             f"context has more than {max_items} values")


class BadBatch(ValueError):
    """A batch body that is not what the endpoint takes; the message names the JSON path."""


def json_batch(body: bytes, field: str, limit: int, *, nonempty: bool = False
               ) -> tuple[list[Any], str]:
    """The items of a JSON array body, or of ``{field: [...]}``, with the path they are at
    (for messages); at most ``limit`` of them. Raises :class:`BadBatch`."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBatch(f"body is not JSON: {exc}") from None
    path = "$"
    if isinstance(data, dict):
        data, path = data.get(field), f"$.{field}"
    if not isinstance(data, list) or (nonempty and not data):
        raise BadBatch(f"{path}: expected {'a non-empty' if nonempty else 'an'} array of {field}")
    if len(data) > limit:
        raise BadBatch(f"{path}: at most {limit} {field} per request, got {len(data)}")
    return data, path
