"""In-process OpenFeature provider for Python backend services.

It follows ``GET /v1/stream/rules`` (server key) in a background thread running an asyncio
loop, keeps the compiled rules in memory and evaluates with the proxy's own engine, so a flag
evaluation costs no network round trip. Install with ``pip install 'flagedge[provider]'``::

    from openfeature import api
    from proxy.provider import FlagedgeProvider

    api.set_provider_and_wait(FlagedgeProvider("http://flagedge:8080", api_key="srv_..."))

Events (OpenFeature spec, section 5): READY when the first rules arrive (emitted by the SDK
when ``initialize`` returns, by us after a reconnect), CONFIGURATION_CHANGED with the changed
flag keys, STALE as soon as the stream drops (the last rules keep being served), ERROR when
it stays down longer than ``error_grace_period`` or the server rejects the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import GeneralError, ProviderFatalError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus

from proxy.evaluation.engine import evaluate
from proxy.model import FlagSet
from proxy.provider.exposures import EXPOSURES_PATH, ExposureCounts, report_every
from proxy.provider.results import (
    BOOLEAN,
    FLOAT,
    INTEGER,
    OBJECT,
    STRING,
    Expected,
    error,
    to_context,
    to_resolution,
)
from proxy.provider.rules import RulesState, StreamPayloadError

log = logging.getLogger("flagedge.provider")

__all__ = ["FlagedgeProvider", "to_context", "to_resolution"]

RULES_PATH = "/v1/stream/rules"
# The longest a 429/503 ``Retry-After`` may hold the stream back: a misconfigured proxy or
# balancer in front of flagedge must not park the provider (serving stale rules) for hours.
RETRY_AFTER_MAX = 60.0


class _Unauthorized(Exception):
    """401/403 from the stream: retrying with the same key cannot help."""


class _Run:
    """The rules served between two shutdowns, and the stream thread's loop and task that
    keep them current once ``initialize`` started it. ``shutdown`` retires the run first and
    puts a fresh one in its place; from then on the old thread changes nothing the provider
    serves or reports, even if it outlives a shutdown whose wait for it timed out (a stalled
    log handler, a huge document being compiled) and a new ``initialize`` has started."""

    def __init__(self) -> None:
        self.rules = RulesState()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.reporter: asyncio.Task[None] | None = None  # exposure reports
        self.retired = False  # written under the provider's _lock


class FlagedgeProvider(AbstractProvider):
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        init_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        read_timeout: float = 45.0,  # three missed 15 s heartbeats: the connection is dead
        connect_timeout: float = 5.0,
        error_grace_period: float = 30.0,
        shutdown_timeout: float = 10.0,
        report_exposures: float = 5.0,  # seconds between exposure reports (0: none)
    ) -> None:
        super().__init__()
        self._url = base_url.rstrip("/") + RULES_PATH
        self._exposures_url = base_url.rstrip("/") + EXPOSURES_PATH
        self._report_period = report_exposures
        # Counts every evaluation this provider answers (insights, DESIGN §11).
        self.exposures = ExposureCounts()
        self._api_key = api_key
        self._init_timeout = init_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._error_grace_period = error_grace_period
        self._shutdown_timeout = shutdown_timeout
        self._run = _Run()
        self._lock = threading.Lock()  # status transitions
        self._emitting = threading.Lock()  # an event going out vs. shutdown retiring its run
        self._lifecycle = threading.Lock()  # thread start vs. shutdown
        self._status = ProviderStatus.NOT_READY
        self._first_rules = threading.Event()
        self._init_returned = False
        self._fatal: str | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        return Metadata(name="flagedge")

    def get_provider_hooks(self) -> list[Hook]:
        return [self.exposures] if self._report_period > 0 else []

    @property
    def status(self) -> ProviderStatus:
        """The provider's own view (the SDK keeps its own copy, driven by our events)."""
        return self._status

    @property
    def flag_set(self) -> FlagSet | None:
        """The rules currently served (an immutable snapshot)."""
        return self._run.rules.flag_set

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start following the stream and block until the first rules arrive."""
        if self._thread is not None:  # initialised twice without a shutdown in between
            self.shutdown()
        with self._lock:
            self._init_returned = False
            self._fatal = None
            self._first_rules.clear()
        with self._lifecycle:  # shutdown() sees no thread or a started one
            run = self._run
            run.loop = asyncio.new_event_loop()  # created here so shutdown() can always reach it
            self._thread = threading.Thread(target=self._thread_main, args=(run,),
                                            name="flagedge-provider", daemon=True)
            self._thread.start()
        self._first_rules.wait(self._init_timeout)
        with self._lock:
            self._init_returned = True
            if self._fatal is not None:
                self._status = ProviderStatus.FATAL
                raise ProviderFatalError(self._fatal)
            if run.rules.flag_set is None:
                self._status = ProviderStatus.ERROR
                raise GeneralError(
                    f"no rules from {self._url} within {self._init_timeout}s; still trying"
                )
            self._status = ProviderStatus.READY

    def shutdown(self) -> None:
        """Stop the stream and forget the rules; ``initialize`` may be called again. Waits
        up to ``shutdown_timeout`` for the stream thread; one that is still busy then is left
        to end on its own, retired: it applies, reports and emits nothing any more."""
        with self._lifecycle:
            run, thread = self._run, self._thread
        with self._emitting, self._lock:  # an event of this run still going out has gone
            run.retired = True
        if run.loop is not None and not run.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                run.loop.call_soon_threadsafe(_cancel, run)
        if thread is not None:
            thread.join(timeout=self._shutdown_timeout)
            if thread.is_alive():
                log.warning("rules stream thread still busy after %.1fs; left to end on its "
                            "own (it changes nothing any more)", self._shutdown_timeout)
        with self._lock:
            self._thread, self._run = None, _Run()
            self._status = ProviderStatus.NOT_READY
        self._first_rules.set()  # an initialize() still waiting gives up now

    # -- evaluation (caller threads; reads one immutable snapshot, no locks) ----------------
    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None
                                ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, BOOLEAN)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None
                               ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, STRING)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None
                                ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, INTEGER)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None
                              ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, FLOAT)

    def resolve_object_details(self, flag_key: str,
                               default_value: Sequence[Any] | Mapping[str, Any],
                               evaluation_context: EvaluationContext | None = None
                               ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._resolve(flag_key, default_value, evaluation_context, OBJECT)

    def _resolve(self, key: str, default: Any, ctx: EvaluationContext | None,
                 expected: Expected) -> FlagResolutionDetails[Any]:
        flag_set = self._run.rules.flag_set
        if flag_set is None:
            return error(default, OFErrorCode.PROVIDER_NOT_READY, "no rules received yet")
        flag = flag_set.flags.get(key)
        # (an invalid flag answers its own error, not a guess at its type)
        if flag is not None and not flag.problems and flag.variant_type not in expected.variant_types:
            return error(default, OFErrorCode.TYPE_MISMATCH,
                          f"flag {key!r} is of type {flag.variant_type.value}, "
                          f"not {expected.name}")
        result = evaluate(flag_set, key, to_context(ctx))
        return to_resolution(result, default, expected)

    # -- the stream (background thread) ----------------------------------------------------
    def _thread_main(self, run: _Run) -> None:
        loop = run.loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            run.task = loop.create_task(self._follow(run))
            if self._report_period > 0:
                run.reporter = loop.create_task(self._report(run))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(run.task)
            if run.reporter is not None:  # its last report, then done
                run.reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(run.reporter)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _report(self, run: _Run) -> None:
        auth = {"Authorization": f"Bearer {self._api_key}"}
        async with httpx.AsyncClient(timeout=self._timeout, headers=auth) as client:
            await report_every(self._report_period, client, self._exposures_url, self.exposures)

    async def _follow(self, run: _Run) -> None:
        attempt = 0
        down_since: float | None = None  # first failure of the current outage
        auth = {"Authorization": f"Bearer {self._api_key}"}
        async with httpx.AsyncClient(timeout=self._timeout, headers=auth) as client:
            while True:
                connected_at: float | None = None
                got_event = False
                server_wait = 0.0
                reason = "stream closed by the server"
                try:
                    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
                    if run.rules.last_event_id is not None:
                        headers["Last-Event-ID"] = run.rules.last_event_id
                    async with aconnect_sse(client, "GET", self._url, headers=headers) as src:
                        status = src.response.status_code
                        if status in (401, 403):
                            raise _Unauthorized(f"{status} from {self._url}: check the server key")
                        if status in (429, 503):  # a connection cap: wait as told
                            server_wait = _retry_after(src.response.headers.get("retry-after"))
                        src.response.raise_for_status()
                        connected_at, down_since = time.monotonic(), None
                        self._on_connected(run)
                        async for sse in src.aiter_sse():
                            got_event = got_event or sse.event in ("put", "patch", "delete")
                            self._on_rules_event(run, sse.event, sse.data, sse.id or None)
                except _Unauthorized as exc:
                    reason = str(exc)
                    if self._on_unauthorized(run, reason):
                        return
                except StreamPayloadError as exc:
                    # Our copy may now differ from the server's: start over with a full put.
                    reason = f"bad {exc.event} event: {exc}"
                    log.error("rules stream: %s; resyncing", reason)
                    run.rules.last_event_id = None
                except (httpx.HTTPError, SSEError, OSError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # a bug must not silently end the stream thread
                    reason = f"unexpected {type(exc).__name__}: {exc}"
                    log.exception("rules stream: unexpected error; resyncing")
                    run.rules.last_event_id = None
                now = time.monotonic()
                if got_event or (connected_at is not None and now - connected_at > 10):
                    attempt = 0  # it worked for a while: start the backoff over
                down_since = down_since or now
                self._on_disconnected(run, reason, now - down_since)
                await asyncio.sleep(max(self._backoff(attempt), server_wait))
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with equal jitter, so a fleet does not reconnect in
        lock-step after a proxy restart."""
        ceiling = min(self._backoff_max, self._backoff_initial * 2 ** min(attempt, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # -- state transitions and events ------------------------------------------------------
    # Each runs in the stream thread and first checks, under _lock, that its run is still
    # the current one: a retired run's thread changes nothing (see _Run).
    def _on_connected(self, run: _Run) -> None:
        with self._lock:
            if run.retired:
                return
            recovering = self._status in (ProviderStatus.STALE, ProviderStatus.ERROR)
            if recovering and run.rules.flag_set is not None and self._init_returned:
                self._status = ProviderStatus.READY
            else:
                recovering = False
        log.info("rules stream connected")
        if recovering:
            self._emit(run, self.emit_provider_ready,
                       ProviderEventDetails(message="rules stream reconnected"))

    def _on_rules_event(self, run: _Run, event: str, data: str, event_id: str | None) -> None:
        if run.retired:  # its rules are no longer served: nothing to keep up to date
            return
        applied = run.rules.apply(event, data, event_id)
        if applied is None:
            return
        with self._lock:
            if run.retired:
                return
            announce_ready = (applied.first and self._init_returned
                              and self._status != ProviderStatus.READY)
            if announce_ready:
                self._status = ProviderStatus.READY
            self._first_rules.set()
        log.info("rules %s applied: version %s, %d flags changed", event, applied.version,
                 len(applied.flags_changed))
        meta: dict[str, bool | str | int | float] = {"version": applied.version}
        if announce_ready:
            self._emit(run, self.emit_provider_ready,
                       ProviderEventDetails(message="rules received", metadata=meta))
        elif not applied.first and applied.flags_changed:
            self._emit(run, self.emit_provider_configuration_changed, ProviderEventDetails(
                flags_changed=list(applied.flags_changed), metadata=meta))

    def _on_disconnected(self, run: _Run, reason: str, down_for: float) -> None:
        event: Callable[[ProviderEventDetails], None] | None = None
        with self._lock:
            if run.retired:
                return
            if self._status == ProviderStatus.READY:
                self._status, event = ProviderStatus.STALE, self.emit_provider_stale
            elif (self._status == ProviderStatus.STALE and down_for >= self._error_grace_period):
                self._status, event = ProviderStatus.ERROR, self.emit_provider_error
        # One warning per outage (and one when it turns into an error), not one per retry.
        level = logging.WARNING if event is not None or down_for == 0 else logging.DEBUG
        log.log(level, "rules stream down for %.1fs (%s); serving the last rules", down_for,
                reason)
        if event is not None:
            self._emit(run, event, ProviderEventDetails(
                message=f"rules stream down: {reason}",
                error_code=OFErrorCode.GENERAL if event == self.emit_provider_error else None))

    def _on_unauthorized(self, run: _Run, reason: str) -> bool:
        """Before the first rules: fatal, stop. Later: ERROR, keep serving and retrying (the
        key may be restored). Returns True when the stream should stop."""
        log.error("rules stream refused: %s", reason)
        with self._lock:
            if run.retired:
                return True
            if run.rules.flag_set is None:
                self._fatal = reason
                fatal_now = self._init_returned
            else:
                fatal_now = False
            if fatal_now:
                self._status = ProviderStatus.FATAL
            emit_error = run.rules.flag_set is not None and self._status != ProviderStatus.ERROR
            if emit_error:
                self._status = ProviderStatus.ERROR
            stop = self._fatal is not None
            if stop:
                self._first_rules.set()  # wake initialize() so it raises at once
        if fatal_now:
            self._emit(run, self.emit_provider_error, ProviderEventDetails(
                message=reason, error_code=OFErrorCode.PROVIDER_FATAL))
        elif emit_error:
            self._emit(run, self.emit_provider_error,
                       ProviderEventDetails(message=reason, error_code=OFErrorCode.GENERAL))
        return stop

    def _emit(self, run: _Run, emit: Callable[[ProviderEventDetails], None],
              details: ProviderEventDetails) -> None:
        """An event of ``run``, unless shutdown retired it since the transition was decided
        (the SDK hands events to its executor: holding the lock here blocks nobody long)."""
        with self._emitting:
            if not run.retired:
                emit(details)


def _cancel(run: _Run) -> None:
    """Runs in the run's own loop (a cancel queued before the loop started runs after the
    task was created, so it is never lost)."""
    if run.task is not None:
        run.task.cancel()


def _retry_after(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header (integer seconds; anything else: no hint), at
    most ``RETRY_AFTER_MAX``."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return 0.0
    if seconds != seconds:  # "nan"
        return 0.0
    return min(max(0.0, seconds), RETRY_AFTER_MAX)
