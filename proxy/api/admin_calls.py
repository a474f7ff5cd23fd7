"""What every release-control route of the admin API shares (DESIGN §10): who calls (an admin
key of the path's environment, acting as its ``name`` with its roles: ``Actor.of_key``), the
JSON body, running ``proxy.release`` code on a blocking Redis client in a worker thread with
its failures turned into HTTP answers, and the one audit line per write.

Who may do what is decided in ``proxy.release.authorization`` only: the handlers call
``release/`` with the caller's Actor and a refusal comes back as ``review.Refused``, a 403
naming the missing role. Every key is bound to one environment: a path naming another is 403.

Failures, as JSON error bodies (``proxy.api.errors``): 400 malformed JSON or a body field of
the wrong shape; 401 no or unknown key; 403 refused; 404 unknown environment, request, flag,
webhook or key; 409 version conflict (``CONFLICT``), approval required (``APPROVAL_REQUIRED``,
with ``next`` naming the route that proposes instead), request no longer open
(``NOT_OPEN``); 422 an invalid document (``INVALID_DOCUMENT``, every problem with its
``path``) or a value release/ refuses (``INVALID``); 503 Redis unreachable.

An admin module: it uses ``storage`` (DESIGN §1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api import errors
from proxy.api.auth import Authenticator
from proxy.api.context import request_body
from proxy.config import Settings
from proxy.keys import KeyRing
from proxy.model import InvalidDocument
from proxy.release.authorization import Actor, may_view
from proxy.release.publisher import ApprovalRequired, ConflictError
from proxy.release.review import NotOpen, Refused
from proxy.storage.layout import LayoutTooNew, check_env
from proxy.storage.url import sync_client

log = logging.getLogger("flagedge.admin")

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated admin API caller: the environment it acts on and who it is."""

    env: str
    actor: Actor
    key_id: str


@dataclass(frozen=True, slots=True)
class Call(Caller):
    """One admin API request as its handler sees it, in a worker thread: the caller, the
    request (path and query parameters, headers: plain data by now) and the JSON body (empty
    for a route that takes none)."""

    request: Request
    body: Json

    def param(self, name: str) -> Any:
        return self.request.path_params[name]

    def int_query(self, name: str, default: int, low: int, high: int) -> int:
        """``?name=N`` within [low, high]; BadField (400) naming it otherwise."""
        try:
            value = int(self.request.query_params.get(name, default))
        except ValueError:
            raise BadField(f"{name}: expected an integer") from None
        if not low <= value <= high:
            raise BadField(f"{name}: {low} to {high}")
        return value


# A route's handler: given the Redis client and the call, the JSON to answer or a Response.
Handler = Callable[[Any, Call], "Json | list[Any] | Response"]


def admin_error(status: int, code: str, details: str, **extra: Any) -> Response:
    """The OFREP-shaped error body (``errorCode``, ``errorDetails``) with extra fields."""
    return errors.json_response({"errorCode": code, "errorDetails": details, **extra}, status)


def requests_route(env: str) -> str:
    return f"POST /v1/admin/envs/{env}/requests"


def failure(exc: Exception, env: str) -> Response | None:
    """A release/ failure as the HTTP answer; None for one that is not ours to explain."""
    if isinstance(exc, BadField):
        return errors.parse_error(str(exc))
    if isinstance(exc, Refused):
        return errors.forbidden(str(exc))
    if isinstance(exc, ApprovalRequired):
        return admin_error(409, "APPROVAL_REQUIRED", f"{exc}; nothing was written",
                           next=requests_route(env))
    if isinstance(exc, NotOpen):
        return admin_error(409, "NOT_OPEN", str(exc), state=exc.request.state)
    if isinstance(exc, ConflictError):
        return admin_error(409, "CONFLICT", str(exc), version=exc.actual)
    if isinstance(exc, InvalidDocument):
        problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        return admin_error(422, "INVALID_DOCUMENT", str(exc), problems=problems)
    if isinstance(exc, LookupError):
        return errors.ofrep_error(404, "NOT_FOUND", str(exc.args[0]) if exc.args else str(exc))
    if isinstance(exc, LayoutTooNew):
        return errors.unavailable(f"{exc}: upgrade flagedge", retry_after=60)
    if isinstance(exc, RedisError | OSError):  # redis-py's connection errors are OSErrors too
        return errors.unavailable(f"Redis unreachable: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # a value release/ refuses: bad variant, URL, role, time
        return admin_error(422, "INVALID", str(exc))
    return None


class AdminCalls:
    """One per app: the key ring (for the caller's roles) and a lazily made Redis client."""

    def __init__(self, settings: Settings, auth: Authenticator, keyring: KeyRing):
        self.settings, self.auth, self.keyring = settings, auth, keyring
        self._client: Any = None

    def caller(self, request: Request) -> Caller | Response:
        """The caller if it holds an admin key (any role: ``view`` reads) for the path's
        ``{env}`` (its own environment where the path names none); else the refusal."""
        principal = self.auth.authorize(request, "admin")
        if isinstance(principal, Response):
            return principal
        actor = self._actor(principal.key_id, principal.name)
        if actor is None:
            return errors.unauthorized("unknown or revoked API key")
        decision = may_view(actor)
        if not decision:
            return errors.forbidden(decision.reason)
        wanted = request.path_params.get("env") or principal.env
        if wanted != principal.env:
            return errors.forbidden(f"this key is for environment {principal.env}, not "
                                    f"{wanted}")
        if self.settings.flags is not None:
            return errors.unavailable("release control needs a Redis source (this proxy "
                                      "serves a file)", retry_after=60)
        try:
            check_env(wanted)
        except ValueError as exc:
            return errors.ofrep_error(404, "NOT_FOUND", str(exc))
        return Caller(wanted, actor, principal.key_id)

    def _actor(self, key_id: str, name: str) -> Actor | None:
        """The key's name and roles; with --no-auth a trusted operator (as a CLI caller);
        None for a key revoked since it was identified (never every role by default)."""
        if self.auth.no_auth:
            return Actor.cli(name)
        record = self.keyring.by_id(key_id)
        return Actor.of_key(record) if record is not None else None

    async def body(self, request: Request) -> Json | Response:
        """The request's JSON object (400 when it is not one)."""
        raw = await request_body(request, self.settings.body_limit)
        if isinstance(raw, Response):
            return raw
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return errors.parse_error(f"the body is not JSON: {exc}")
        if not isinstance(data, dict):
            return errors.parse_error("the body must be a JSON object")
        return data

    def _redis(self) -> Any:
        if self._client is None:
            self._client = sync_client(self.settings.redis, cluster=self.settings.cluster,
                                       socket_connect_timeout=5, socket_timeout=30)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    def route(self, path: str, handler: Handler, method: str, *, body: bool = False,
              status: int = 200) -> Route:
        """A route whose ``handler`` runs for an authenticated caller (with the JSON body
        when ``body``) in a worker thread: redis-py's sync client, release/'s code as the CLI
        runs it. Its JSON answers with ``status``; a failure with its HTTP answer."""
        async def endpoint(request: Request) -> Response:
            caller = self.caller(request)
            if isinstance(caller, Response):
                return caller
            data = await self.body(request) if body else {}
            if isinstance(data, Response):
                return data
            call = Call(caller.env, caller.actor, caller.key_id, request, data)
            client = self._redis()  # made here, on the loop: threads never race to make it
            try:
                out = await asyncio.to_thread(handler, client, call)
            except Exception as exc:
                answer = failure(exc, caller.env)
                if answer is None:
                    raise
                return answer
            return out if isinstance(out, Response) else errors.json_response(out, status)

        return Route(path, endpoint, methods=[method])

    def audit(self, caller: Caller, what: str, **fields: Any) -> None:
        """One log line per write: who (name and key id, never key material), where, what."""
        details = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        log.info("admin write by %s (key %s) on %s: %s%s", caller.actor.name, caller.key_id,
                 caller.env, what, f" {details}" if details else "")


def field(body: Json, name: str, kind: type | tuple[type, ...], default: Any = None, *,
          required: bool = False) -> Any:
    """``body[name]`` checked against ``kind``; raises BadField naming it."""
    if name not in body or body[name] is None:
        if required:
            raise BadField(f"{name}: required")
        return default
    value = body[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadField(f"{name}: expected {_names(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise BadField(f"{name}: expected {_names(kind)}, got {type(value).__name__}")
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "bool": "a boolean", "dict": "an object",
             "list": "a list", "float": "a number"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


class BadField(ValueError):
    """A body field missing or of the wrong type: 400, naming the field."""
