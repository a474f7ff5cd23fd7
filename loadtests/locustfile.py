"""Locust load test for flagedge: realistic traffic against a running proxy.

User classes (mix them with Locust's own class arguments and ``--config-users``):

- ``BrowserUser``: a browser running the OFREP web provider. Bulk evaluation with
  ``If-None-Match`` for a user drawn from a realistic pool, holds the ``eventStreams`` SSE
  notification stream and re-fetches (``flagConfigEtag``) on every ``refetchEvaluation``.
- ``ServiceUser``: a backend calling the single-flag endpoint with a context per request.
- ``StreamUser``: holds one SSE stream (``/v1/stream/rules`` with a server key, else
  ``/v1/stream/evaluated``) and reports the delay from each change's timestamp to its receipt
  as a Locust request entry (type ``SSE``, name ``propagation <stream>``).
- ``ChangeUser`` (one instance, low rate): pushes a rule change through Redis every
  ``change_interval`` seconds the way ``flagedge push`` does (one atomic Lua write), so the
  propagation above is measured under load.

Settings (option / env var):
  --host / LOCUST_HOST                        the proxy, e.g. http://127.0.0.1:8080
  --client-key / LOCUST_CLIENT_KEY            client API key (``flagedge keys create``)
  --server-key / LOCUST_SERVER_KEY            server key: StreamUser then follows rules
  --flagedge-env / LOCUST_FLAGEDGE_ENV        environment ChangeUser writes to (dev)
  --redis-url / LOCUST_REDIS_URL              Redis of that environment (ChangeUser)
  --flag-keys / LOCUST_FLAG_KEYS              flags ServiceUser asks for (config/flags.json)
  --context-pool / LOCUST_CONTEXT_POOL        number of distinct users (2000)
  --stream-kind / LOCUST_STREAM_KIND          auto | rules | evaluated (auto)

Example (with ``make run`` in another terminal, which prints the client key):

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s \\
        -H http://127.0.0.1:8080 --client-key fe_client_... \\
        --config-users '{"user_class_name": "ServiceUser", "weight": 5}'
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import gevent
import httpx
from httpx_sse import connect_sse
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

log = logging.getLogger("flagedge.loadtest")
# httpx logs every request URL at INFO: stream URLs carry tokens and contexts.
logging.getLogger("httpx").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
DEMO_FLAGS = ROOT / "config" / "flags.json"
TICK_FLAG = "loadtest-tick"  # the flag ChangeUser rewrites


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("flagedge")
    group.add_argument("--client-key", env_var="LOCUST_CLIENT_KEY", default="",
                       help="client API key")
    group.add_argument("--server-key", env_var="LOCUST_SERVER_KEY", default="",
                       help="server API key (StreamUser follows /v1/stream/rules)")
    group.add_argument("--flagedge-env", env_var="LOCUST_FLAGEDGE_ENV", default="dev",
                       help="environment ChangeUser writes to")
    group.add_argument("--redis-url", env_var="LOCUST_REDIS_URL", default="",
                       help="Redis URL for ChangeUser")
    group.add_argument("--flag-keys", env_var="LOCUST_FLAG_KEYS", default="",
                       help="comma-separated flags for ServiceUser (default: config/flags.json)")
    group.add_argument("--context-pool", env_var="LOCUST_CONTEXT_POOL", type=int, default=2000,
                       help="number of distinct users in the context pool")
    group.add_argument("--stream-kind", env_var="LOCUST_STREAM_KIND", default="auto",
                       choices=["auto", "rules", "evaluated"], help="StreamUser's stream")


# -- realistic contexts -------------------------------------------------------------------
COUNTRIES = ["US"] * 30 + ["DE"] * 15 + ["GB"] * 10 + ["FR"] * 8 + ["CH", "NO", "NL", "SE",
                                                                     "ES", "IT", "BR", "JP"]
PLATFORMS = ["web"] * 6 + ["ios"] * 2 + ["android"] * 2
APP_VERSIONS = ["4.3.1", "4.2.0", "4.1.7", "3.9.2", "v4.2", "5.0.0-beta.1"]
LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP"]


def make_context(i: int, rng: random.Random) -> dict[str, Any]:
    """User ``i`` of the pool: stable id, a few percent internal staff and canary ring."""
    platform = rng.choice(PLATFORMS)
    ctx: dict[str, Any] = {
        "targetingKey": f"user-{i}",
        "email": f"user{i}@flagedge.dev" if i % 50 == 0 else f"user{i}@example.com",
        "country": rng.choice(COUNTRIES),
        "platform": platform,
        "locale": rng.choice(LOCALES),
        "loggedIn": rng.random() < 0.7,
        "plan": rng.choice(["free", "free", "pro", "enterprise"]),
    }
    if platform != "web":
        ctx["appVersion"] = rng.choice(APP_VERSIONS)
    if i % 40 == 1:
        ctx["ring"] = "canary"
    return ctx


_POOL: list[dict[str, Any]] = []


def context_pool(size: int) -> list[dict[str, Any]]:
    if len(_POOL) != size:
        rng = random.Random(42)  # the same users on every run
        _POOL[:] = [make_context(i, rng) for i in range(max(1, size))]
    return _POOL


def flag_keys(option: str) -> list[str]:
    if option:
        return [k.strip() for k in option.split(",") if k.strip()]
    return sorted(json.loads(DEMO_FLAGS.read_text())["flags"])


def report(request_type: str, name: str, millis: float, length: int = 0,
           exception: BaseException | None = None) -> None:
    """One entry in Locust's statistics (stats table, charts, CSV, HTML report)."""
    events.request.fire(request_type=request_type, name=name, response_time=millis,
                        response_length=length, exception=exception, context={})


class _Paced:
    """``pause = (min, max)`` seconds between tasks; settable through ``--config-users``."""

    pause: tuple[float, float] = (1.0, 1.0)

    def wait_time(self) -> float:
        low, high = self.pause
        return random.uniform(low, high)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


# -- BrowserUser ------------------------------------------------------------------------------
class BrowserUser(_Paced, FastHttpUser):
    """A page with the OFREP web provider: bulk evaluation with If-None-Match, then the
    eventStreams notification stream, re-fetching on each change."""

    weight = 3
    pause = (1.0, 3.0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.key = opts.client_key
        self.pool = context_pool(opts.context_pool)
        self.etags: dict[int, str] = {}  # per visitor, as the browser's provider keeps it
        self.visitor = random.randrange(len(self.pool))
        self.stream_url: str | None = None
        self.listener: gevent.Greenlet | None = None

    def on_stop(self) -> None:
        if self.listener is not None:
            self.listener.kill(block=False)

    def _bulk(self, name: str, query: str = "") -> None:
        headers = {**_auth(self.key), "Content-Type": "application/json"}
        etag = self.etags.get(self.visitor)
        if etag:
            headers["If-None-Match"] = etag
        body = json.dumps({"context": self.pool[self.visitor]})
        with self.client.post("/ofrep/v1/evaluate/flags" + query, data=body, headers=headers,
                              name=name, catch_response=True) as resp:
            if resp.status_code == 304:
                resp.success()
            elif resp.status_code == 200:
                data = resp.json()
                if not isinstance(data.get("flags"), list):
                    resp.failure("bulk response without flags")
                    return
                self.etags[self.visitor] = resp.headers.get("ETag", "")
                streams = data.get("eventStreams") or []
                if streams and self.stream_url is None:
                    self.stream_url = urljoin(self.host, streams[0]["endpoint"]["requestUri"])
                resp.success()
            else:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

    @task(5)
    def page_view(self) -> None:
        """The same visitor navigates: the provider re-validates its cached flags (304)."""
        self._bulk("bulk evaluate")
        if self.stream_url and self.listener is None:
            self.listener = gevent.spawn(self._follow)

    @task(1)
    def new_visitor(self) -> None:
        """Another user from the pool opens the page (a 200, cached per context)."""
        self.visitor = random.randrange(len(self.pool))
        self._bulk("bulk evaluate (new visitor)")

    def _follow(self) -> None:
        """The provider's EventSource: each refetchEvaluation triggers a re-fetch."""
        while True:
            started = time.perf_counter()
            try:
                with httpx.Client(timeout=httpx.Timeout(5.0, read=60.0)) as http, \
                        connect_sse(http, "GET", self.stream_url or "") as source:
                    source.response.raise_for_status()
                    report("SSE", "events stream (connect)",
                           (time.perf_counter() - started) * 1000)
                    for event in source.iter_sse():
                        if event.event != "message" or not event.data:
                            continue
                        data = json.loads(event.data)
                        if data.get("type") == "refetchEvaluation":
                            self._bulk("bulk evaluate (refetch)",
                                       f"?flagConfigEtag={data.get('etag', '')}")
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # a dropped stream is reported and reopened
                report("SSE", "events stream (connect)",
                       (time.perf_counter() - started) * 1000, exception=exc)
                gevent.sleep(1.0)


# -- ServiceUser ------------------------------------------------------------------------------
class ServiceUser(_Paced, FastHttpUser):
    """A backend service: one flag per call, the context of the request it is serving."""

    weight = 3
    pause = (0.05, 0.2)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.headers = {**_auth(opts.client_key), "Content-Type": "application/json"}
        self.pool = context_pool(opts.context_pool)
        self.keys = flag_keys(opts.flag_keys)

    @task
    def evaluate_flag(self) -> None:
        key = random.choice(self.keys)
        ctx = dict(random.choice(self.pool))
        ctx["requestId"] = f"{random.getrandbits(48):x}"  # a context per request
        body = json.dumps({"context": ctx})
        with self.client.post(f"/ofrep/v1/evaluate/flags/{key}", data=body,
                              headers=self.headers, name="single evaluate",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{key}: HTTP {resp.status_code}: {resp.text[:200]}")
            elif "variant" not in resp.json():
                resp.failure(f"{key}: no variant in the OFREP answer")


# -- StreamUser -------------------------------------------------------------------------------
class StreamUser(User):
    """Holds one SSE stream; every change received is reported as its propagation delay."""

    weight = 1

    def wait_time(self) -> float:
        return 1.0  # only between reconnects: a task holds the stream for the whole run

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        kind = opts.stream_kind
        if kind == "auto":
            kind = "rules" if opts.server_key else "evaluated"
        self.kind = kind
        if kind == "rules":
            self.path, self.key = "/v1/stream/rules", opts.server_key or opts.client_key
        else:
            ctx = random.choice(context_pool(opts.context_pool))
            encoded = base64.urlsafe_b64encode(json.dumps(ctx).encode()).decode().rstrip("=")
            self.path, self.key = f"/v1/stream/evaluated?context={encoded}", opts.client_key

    @task
    def hold_stream(self) -> None:
        started = time.perf_counter()
        name = f"propagation {self.kind}"
        try:
            with httpx.Client(timeout=httpx.Timeout(5.0, read=60.0)) as http, \
                    connect_sse(http, "GET", urljoin(self.host, self.path),
                                headers=_auth(self.key)) as source:
                source.response.raise_for_status()
                report("SSE", f"{self.kind} stream (connect)",
                       (time.perf_counter() - started) * 1000)
                for event in source.iter_sse():
                    if event.event != "patch" or not event.data:
                        continue
                    received = time.time()
                    written = change_time(self.kind, json.loads(event.data))
                    if written is not None:
                        report("SSE", name, max(0.0, received - written) * 1000,
                               len(event.data))
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            report("SSE", f"{self.kind} stream (connect)",
                   (time.perf_counter() - started) * 1000, exception=exc)


def change_time(kind: str, patch: dict[str, Any]) -> float | None:
    """When the change in ``patch`` was written: Redis's write time (``updated_at``) on the
    rules stream; the ChangeUser's ``changedAt`` flag metadata on the evaluated stream."""
    if kind == "rules":
        at = patch.get("updated_at")
        return float(at) if at else None
    for item in patch.get("flags", []):
        if item.get("key") == TICK_FLAG:
            at = (item.get("metadata") or {}).get("changedAt")
            return float(at) if at is not None else None
    return None


# -- ChangeUser -------------------------------------------------------------------------------
def tick_flag(n: int, at: float) -> dict[str, Any]:
    """A rollout whose share moves in steps of 10%, stamped with its write time."""
    share = (n * 10) % 110
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", share], ["off", 100 - share]]},
        "metadata": {"kind": "loadtest", "changedAt": at, "tick": n},
    }


class ChangeUser(User):
    """Low-rate rule changes through Redis (one atomic write each, as `flagedge push`)."""

    fixed_count = 1
    change_interval = 2.0  # seconds between changes; settable through --config-users

    def wait_time(self) -> float:
        return float(self.change_interval)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        if not opts.redis_url:
            log.error("ChangeUser needs --redis-url (LOCUST_REDIS_URL); it stops here")
            raise StopUser()
        import redis

        self.env = opts.flagedge_env
        self.redis = redis.Redis.from_url(opts.redis_url)
        self.n = 0

    def on_stop(self) -> None:
        if getattr(self, "redis", None) is not None:
            self.redis.close()

    @task
    def push_change(self) -> None:
        from proxy.release import publisher
        from proxy.release.changeset import Document, make_plan

        self.n += 1
        started = time.perf_counter()
        try:
            state = publisher.read_state(self.redis, self.env)
            current = state.document()
            new = Document({**current.flags, TICK_FLAG: tick_flag(self.n, time.time())},
                           current.evaluators, current.metadata)
            result = publisher.write(self.redis, self.env, make_plan(current, new),
                                     author="locust", message=f"loadtest tick {self.n}")
            error = None if result.status == "ok" else RuntimeError(f"push: {result.status}")
        except Exception as exc:
            error = exc
        report("REDIS", "push change", (time.perf_counter() - started) * 1000,
               exception=error)
