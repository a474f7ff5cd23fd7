"""Who is calling a sync RPC, and for which environment (DESIGN §9).

A server or admin key, found in (first match wins):
1. ``authorization: Bearer KEY`` metadata (the Go and Java providers can send it);
2. a ``key=KEY`` part of the selector (the request's deprecated ``selector`` field or the
   ``flagd-selector`` metadata; JS and .NET can send nothing else);
3. ``provider_id`` (Python, Go, flagd; the proto names it for authentication).
A ``provider_id`` that is no key is fine when 1 or 2 holds the key.

The environment is the key's. A selector may name it (``env=NAME``, or a bare ``NAME``);
naming another is PERMISSION_DENIED, as is a client key. No key or an unknown one is
UNAUTHENTICATED; keys not loaded yet (key source unreachable) UNAVAILABLE, so providers
retry. Deciding costs one sha256 and dict lookups, no I/O; nothing here logs a selector,
provider id or metadata (they may hold keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from proxy.keys import KeyRing, Refusal, identify, kind_allows

SELECTOR_HEADER = "flagd-selector"
NEED = "server"  # sync hands out whole rule sets: what server keys may read


@dataclass(frozen=True, slots=True)
class Caller:
    env: str
    kind: str
    key_id: str  # 12 hex of the key's hash (safe to log); "no-auth" under --no-auth


@dataclass(frozen=True, slots=True)
class Denied:
    code: grpc.StatusCode
    details: str  # sent to the client: never echoes what it sent
    reason: str  # label of flagedge_sync_refusals_total


@dataclass(frozen=True, slots=True)
class Selector:
    key: str | None = None
    env: str | None = None


def parse_selector(text: str) -> Selector | Denied:
    """``key=...,env=...`` (any order), or a bare environment name; other ``name=value``
    parts (flagd's ``source=``, ``app=``) are accepted and ignored."""
    key = env = None
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq:
            name, value = "env", name
        if not name or not value:
            return Denied(grpc.StatusCode.INVALID_ARGUMENT,
                          "selector parts are name=value (key=, env=) or an environment name",
                          "bad_selector")
        if name == "key":
            key = value
        elif name == "env":
            env = value
    return Selector(key=key, env=env)


def bearer(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[str | None, str | None] | Denied:
    """(key from ``authorization``, selector from ``flagd-selector``) in call metadata."""
    key = selector = None
    for name, value in metadata:
        if isinstance(value, bytes):
            continue  # binary (-bin) headers carry neither
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return Denied(grpc.StatusCode.UNAUTHENTICATED,
                              "authorization metadata must be 'Bearer <key>'", "bad_authorization")
            key = token.strip()
        elif name == SELECTOR_HEADER:
            selector = value
    return key, selector


class Gate:
    """Decides callers against a key ring (``None`` with ``no_auth``: everyone is admin of
    ``env``)."""

    def __init__(self, keyring: KeyRing | None, *, no_auth: bool = False, env: str = "default"):
        self.keyring = keyring
        self.no_auth = no_auth
        self._anonymous = Caller(env=env, kind="admin", key_id="no-auth")

    def decide(self, provider_id: str, selector: str,
               metadata: Iterable[tuple[str, str | bytes]]) -> Caller | Denied:
        found = bearer(metadata)
        if isinstance(found, Denied):
            return found
        header_key, header_selector = found
        parsed = parse_selector(header_selector if header_selector is not None else selector)
        if isinstance(parsed, Denied):
            return parsed
        caller = self._who(header_key or parsed.key or provider_id.strip())
        if isinstance(caller, Denied):
            return caller
        if parsed.env is not None and parsed.env != caller.env:
            return Denied(grpc.StatusCode.PERMISSION_DENIED,
                          "this key's environment is not the one the selector names",
                          "other_env")
        return caller

    def _who(self, api_key: str) -> Caller | Denied:
        if self.no_auth:
            return self._anonymous
        if not api_key:
            return Denied(grpc.StatusCode.UNAUTHENTICATED,
                          "no API key: send a server key as provider_id, 'authorization: "
                          "Bearer <key>' metadata, or key=<key> in the selector", "no_key")
        found = identify(self.keyring, api_key)
        if found is Refusal.NOT_LOADED:
            return Denied(grpc.StatusCode.UNAVAILABLE,
                          "API keys are not loaded yet (key source unreachable)", "not_loaded")
        if found is Refusal.UNKNOWN:
            return Denied(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key",
                          "unknown_key")
        if not kind_allows(found.kind, NEED):
            return Denied(grpc.StatusCode.PERMISSION_DENIED,
                          f"a {found.kind} key cannot sync rules (needs a server or admin key)",
                          "client_key")
        return Caller(env=found.env, kind=found.kind, key_id=found.id)

    def still_valid(self, caller: Caller) -> bool:
        """Is the key behind an open stream still live, with the env and kind it had?"""
        if self.no_auth or self.keyring is None:
            return True
        holder = self.keyring.by_id(caller.key_id)
        return holder is not None and (holder.env, holder.kind) == (caller.env, caller.kind)
