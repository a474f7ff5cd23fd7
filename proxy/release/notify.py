"""The delivery worker (DESIGN §10): every ``serve`` runs one, a consumer of the group
``notify`` on each environment's outbox, delivering each entry to the environment's
webhooks.

- At least once, normally once: a new entry goes to one consumer (``XREADGROUP >``); it is
  acknowledged only when every webhook got it or was given up on. An entry whose consumer
  died (no heartbeat for ``claim_idle`` seconds) is taken over by another (``XAUTOCLAIM``)
  and sent again with the same ``webhook-id``: receivers de-duplicate on it.
- Retries with exponential backoff per (entry, webhook), their state in Redis
  (``storage/notify.py``) so a takeover carries on counting; after ``attempts`` failures the
  delivery is recorded in ``flagedge:{ENV}:failed`` (``flagedge notify failed``).
- A webhook gets the entries written after it was added (by Redis' clock), not the backlog.
- SSRF: the URL's addresses are checked again before each attempt (release/webhooks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from proxy.release import messages
from proxy.release.requests import Request
from proxy.release.webhooks import UnsafeURL, Webhook, check_addresses, headers, host_and_port
from proxy.storage import layout
from proxy.storage import notify as stored
from proxy.storage import requests as stored_requests
from proxy.storage.replies import text

log = logging.getLogger("flagedge.notify")
BATCH = 50


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    attempts: int = 8  # deliveries tried before one is recorded as failed
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    max_backoff: float = 600.0
    timeout: float = 10.0  # one HTTP attempt
    poll: float = 0.5  # seconds between rounds when there was nothing to do
    claim_idle: float = 60.0  # an entry nobody touched this long is taken over
    ui_url: str = ""  # base URL of the management UI for links ('' = no link)

    def delay(self, attempts: int) -> float:
        return min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


class Notifier:
    """One serve's delivery worker. ``client``: an asyncio redis-py client."""

    def __init__(self, client: Any, config: NotifyConfig, consumer: str | None = None,
                 http: httpx.AsyncClient | None = None):
        self.client = client
        self.config = config
        self.consumer = consumer or consumer_name()
        self.http = http or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._groups: set[str] = set()
        self.delivered = 0  # successful HTTP deliveries by this worker
        self.failed = 0  # deliveries given up

    async def run(self) -> None:
        """Rounds until cancelled; an error (Redis away) is logged and retried."""
        try:
            while True:
                try:
                    busy = await self.round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("notify: delivery round failed; retrying")
                    busy = False
                if not busy:
                    await asyncio.sleep(self.config.poll)
        finally:
            await self.http.aclose()
            with contextlib.suppress(TimeoutError):  # never hold up a shutdown for it
                async with asyncio.timeout(2.0):
                    await self._leave()

    async def _leave(self) -> None:
        """On a graceful stop, leave each group this worker holds nothing in (each restart
        is a new consumer name: without this, the groups' consumer lists only grow). One
        with entries pending stays, so another worker can take them over."""
        for env in self._groups:
            key = layout.outbox_key(env)
            try:
                held = await self.client.xpending_range(key, stored.GROUP, "-", "+", 1,
                                                        consumername=self.consumer)
                if not held:
                    await self.client.xgroup_delconsumer(key, stored.GROUP, self.consumer)
            except Exception:  # Redis away at shutdown: the name stays, harmlessly
                log.debug("notify: could not leave the group of %s", env, exc_info=True)

    async def round(self) -> bool:
        """One pass over every environment; True when it handled any entry. One
        environment's failure (a broken key) does not hold up the others'."""
        busy = False
        for env in sorted(text(e) for e in await self.client.smembers(layout.ENVS)):
            if not layout.ENV_NAME.match(env):
                continue
            try:
                busy = await self.env_round(env) or busy
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):  # the outbox was deleted: make the group again
                    self._groups.discard(env)
                else:
                    log.exception("notify: delivering %s failed; retrying", env)
        return busy

    async def _ensure_group(self, env: str) -> None:
        if env in self._groups:
            return
        try:
            await self.client.xgroup_create(layout.outbox_key(env), stored.GROUP, id="0",
                                            mkstream=True)
        except Exception as exc:  # BUSYGROUP: another worker made it first
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(env)

    async def env_round(self, env: str) -> bool:
        await self._ensure_group(env)
        key = layout.outbox_key(env)
        entries: dict[str, dict[str, str]] = {}
        claimed = await self.client.xautoclaim(
            key, stored.GROUP, self.consumer, int(self.config.claim_idle * 1000),
            start_id="0-0", count=BATCH)
        for entry_id, raw in claimed[1]:
            if raw:
                entries[text(entry_id)] = _fields(raw)
        for start in ("0", ">"):
            reply = await self.client.xreadgroup(stored.GROUP, self.consumer, {key: start},
                                                 count=BATCH)
            for _stream, items in reply or []:
                for entry_id, raw in items:
                    if raw:  # trimmed away while pending: nothing left to send
                        entries[text(entry_id)] = _fields(raw)
                    else:
                        await self.client.xack(key, stored.GROUP, entry_id)
        if not entries:
            return False
        hooks = await self._webhooks(env)
        if not hooks:
            # Nobody to deliver to: the batch acknowledged in one call, not a script per
            # entry (a round trip per rule change: 7 % of the loop in a storm of them).
            await self.client.xack(key, stored.GROUP, *entries)
            return False
        new_work = False
        for entry_id, fields in sorted(entries.items(), key=lambda kv: _order(kv[0])):
            new_work = await self.handle(env, entry_id, fields, hooks) or new_work
        return new_work

    async def _webhooks(self, env: str) -> list[Webhook]:
        out = []
        for raw in (await stored.read_webhooks(self.client, env)).values():
            try:
                out.append(Webhook.from_json(bytes(raw)))
            except ValueError:
                log.warning("notify: %s holds a record that is not a webhook", env)
        return out

    async def handle(self, env: str, entry_id: str, fields: dict[str, str],
                     hooks: list[Webhook]) -> bool:
        """Try each due delivery of one entry; acknowledge it when none is left. True when
        an attempt was made."""
        at = messages.entry_time(entry_id)
        targets = [h for h in hooks if h.created_at <= at]
        names = [stored.delivery_field(entry_id, h.id) for h in targets]
        states = await self.client.hmget(stored.deliveries_key(env), names) if names else []
        message: dict[str, Any] | None = None
        left, tried = False, False
        for hook, name, raw in zip(targets, names, states, strict=True):
            state = orjson.loads(raw) if raw else {"attempts": 0, "next_at": 0}
            if state.get("done"):
                continue
            if state["next_at"] > time.time():
                left = True
                continue
            if message is None:
                message = await self._message(env, entry_id, fields)
            tried = True
            error = await self.deliver(hook, messages.message_id(env, entry_id), message)
            state = await self._record(env, entry_id, hook, state, error, fields_type(fields))
            await self.client.hset(stored.deliveries_key(env), name, orjson.dumps(state))
            left = left or not state.get("done")
        if left:  # a heartbeat: keep the entry ours while it waits for a retry
            await self.client.xclaim(layout.outbox_key(env), stored.GROUP, self.consumer, 0,
                                     [entry_id], justid=True)
        else:
            await self.client.eval(stored.ACK_LUA, 2, layout.outbox_key(env),
                                   stored.deliveries_key(env), entry_id, *names)
        return tried

    async def _record(self, env: str, entry_id: str, hook: Webhook, state: dict[str, Any],
                      error: str | None, kind: str) -> dict[str, Any]:
        attempts = int(state["attempts"]) + 1
        if error is None:
            self.delivered += 1
            return {"attempts": attempts, "done": True}
        if attempts < self.config.attempts:
            log.info("notify: %s to %s failed (%s), attempt %d", entry_id, hook.url, error,
                     attempts)
            return {"attempts": attempts, "next_at": time.time() + self.config.delay(attempts),
                    "error": error}
        self.failed += 1
        log.warning("notify: giving up %s to %s after %d attempts: %s", entry_id, hook.url,
                    attempts, error)
        await stored.add_failed(self.client, env, {
            "webhook": hook.id, "url": hook.url, "entry": entry_id,
            "webhook_id": messages.message_id(env, entry_id),
            "type": kind,
            "attempts": str(attempts), "error": error, "at": f"{time.time():.3f}"})
        return {"attempts": attempts, "done": True, "failed": True, "error": error}

    async def _message(self, env: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
        request, impact = None, None
        if fields.get("type") == "change":
            if fields.get("request"):
                raw = await self.client.hget(stored_requests.requests_key(env),
                                             fields["request"])
                request = _request_or_none(raw)
            else:
                impact = await self._impact(env, fields)
        return messages.build(env, entry_id, fields, request=request, impact=impact,
                              ui_url=self.config.ui_url)

    async def _impact(self, env: str, fields: dict[str, str]) -> list[dict[str, Any]]:
        evaluators, metadata = await self.client.hmget(layout.meta_key(env),
                                                       ["evaluators", "metadata"])
        try:
            return await asyncio.to_thread(
                messages.change_impact, fields, orjson.loads(evaluators or b"{}"),
                orjson.loads(metadata or b"{}"))
        except Exception:  # an estimate only: a message goes out without it
            log.exception("notify: impact estimate failed")
            return []

    async def deliver(self, hook: Webhook, message_id: str,
                      message: dict[str, Any]) -> str | None:
        """One attempt; None when the receiver answered 2xx, else why not."""
        try:
            host, port = host_and_port(hook.url)
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                 type=socket.SOCK_STREAM)
            check_addresses(hook.url, {i[4][0] for i in infos}, hook.allow_private)
            body = messages.body(message, hook.format)
            response = await self.http.post(hook.url, content=body,
                                            headers=headers(hook.secret, message_id, body),
                                            timeout=self.config.timeout)
        except (UnsafeURL, OSError, httpx.HTTPError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


def fields_type(fields: Mapping[str, str]) -> str:
    if fields.get("type") == "change":
        return "change.applied"
    return f"request.{fields.get('event', '')}"


def _request_or_none(raw: Any) -> Request | None:
    if raw is None:
        return None
    try:
        return Request.from_json(bytes(raw))
    except ValueError:
        return None


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
