"""The UI's insight pages (DESIGN §11, §12), read exactly as ``flagedge insights`` and the
admin API's insights routes read them (``proxy.insights.usage``), so the numbers agree:

- the flags list's insight columns (``read_insights``, called by ``views.read_live``):
  exposures per variant over ``SINCE_S`` (``insights flags``' default window) with a
  per-minute sparkline of the last ``SPARK_MINUTES``, last evaluated, the stale marker
  (``insights stale``' rule over ``UNUSED_S``), the environment's unique users;
- ``GET /ui/experiments``: the environment's experiments (what this proxy serves: the
  flags the engine marks as experiments) with the events tracked for their revision;
- ``GET /ui/experiments/{key}?event=NAME``: its results per variant, intervals, tests and
  warnings (``insights experiment --json``'s report);
- ``GET /ui/explain?flag=&context=``: the variant, value, reason and rule path a context
  gets from the rules this proxy serves (``POST /v1/explain``'s answer).

Read-only pages: nothing here writes. Redis readers run in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api.admin import explanation
from proxy.api.context import BadContext, check_context
from proxy.insights import usage
from proxy.release.publisher import read_state
from proxy.storage import insights as stored
from proxy.storage.layout import LayoutTooNew
from proxy.storage.replies import text

if TYPE_CHECKING:
    from proxy.ui.routes import SignedIn, UiRoutes

SINCE_S = 86_400.0  # `flagedge insights flags`' default --since (24h)
UNUSED_S = 30 * 86_400.0  # `flagedge insights stale`' default --unused (30d)
SPARK_MINUTES = 60
SPARK_W, SPARK_H = 120, 24
SPARK_COLOURS = 6  # CSS classes spark-0 .. spark-5 (ui.css), reused in turn
MAX_EVENTS = 50  # tracked event names listed per experiment
MAX_CONTEXT_CHARS = 20_000


# -- the flags list's columns --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VariantUse:
    """One variant's exposures over the window and its per-minute sparkline."""

    variant: str | None  # None: served without a variant (an error, a disabled flag)
    exposures: int
    colour: int  # index of its CSS colour class
    points: str  # the sparkline's polyline points ("x,y x,y ..."), server-drawn
    peak: int  # the highest per-minute count in the sparkline's window

    @property
    def label(self) -> str:
        return self.variant if self.variant is not None else "(no variant)"


@dataclass(frozen=True, slots=True)
class FlagInsight:
    variants: tuple[VariantUse, ...]
    last_evaluated: int | None  # Unix seconds, None: never
    stale: str | None  # why `insights stale` lists it; None: not stale

    @property
    def exposures(self) -> int:
        return sum(v.exposures for v in self.variants)

    def summary(self) -> str:
        """The sparkline's text alternative: the numbers it draws."""
        if not self.variants:
            return "No exposures in the last 24 hours."
        parts = ", ".join(f"{v.label} {v.exposures} (peak {v.peak} a minute)"
                          for v in self.variants)
        return f"Exposures in the last 24 hours by variant: {parts}."


@dataclass(frozen=True, slots=True)
class EnvInsight:
    unique_users: int  # over SINCE_S (the environment's HyperLogLogs: not per flag)
    usage: str  # "complete" | "partly unknown"
    flags: Mapping[str, FlagInsight]


def read_insights(client: Any, env: str, flags: Sequence[str], now: float) -> EnvInsight:
    """The flags report, the stale report and the last hour per minute, as the CLI reads
    them with its default windows (blocking: call from a worker thread)."""
    report = usage.flags_report(client, env, flags, now - SINCE_S, now)
    stale = {row["flag"]: row["reason"]
             for row in usage.stale_report(client, env, flags, now - UNUSED_S, now)["flags"]}
    minutes = list(stored.minutes_between(now - 60 * (SPARK_MINUTES - 1), now))
    per_minute = usage.minute_counts(client, env, minutes)
    out = {}
    for row in report["flags"]:
        series = {v["variant"]: [per_minute[m].get(row["flag"], {}).get(v["variant"] or "", 0)
                                 for m in minutes] for v in row["variants"]}
        out[row["flag"]] = FlagInsight(variant_uses(row["variants"], series),
                                       row["last_evaluated"], stale.get(row["flag"]))
    return EnvInsight(report["unique_users"], report["usage"], out)


def variant_uses(variants: Sequence[Mapping[str, Any]],
                 series: Mapping[str | None, Sequence[int]]) -> tuple[VariantUse, ...]:
    """Each variant (most exposed first, as reported) with its line on one shared scale, so
    the lines compare."""
    top = max((max(s, default=0) for s in series.values()), default=0)
    return tuple(VariantUse(v["variant"], v["exposures"], i % SPARK_COLOURS,
                            sparkline(series.get(v["variant"], ()), top),
                            max(series.get(v["variant"], ()), default=0))
                 for i, v in enumerate(variants))


def sparkline(counts: Sequence[int], top: int) -> str:
    """Polyline points in a SPARK_W x SPARK_H box, 1 px margin; a flat line at the bottom
    when nothing was counted."""
    if len(counts) < 2:
        return ""
    step = (SPARK_W - 2) / (len(counts) - 1)
    height = SPARK_H - 2
    return " ".join(f"{1 + i * step:.1f},{SPARK_H - 1 - (c / top * height if top else 0):.1f}"
                    for i, c in enumerate(counts))


# -- experiments ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Experiment:
    key: str
    revision: str
    description: str
    events: tuple[str, ...]  # tracked for this revision (attributed at least once)


def tracked_events(client: Any, env: str, flag: str, revision: str) -> tuple[str, ...]:
    """The event names with attributed events for this revision (their ``:count:`` hash)."""
    prefix = f"{stored.experiment_key(env, flag, revision)}:count:"
    found = set()
    for raw in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
        found.add(text(raw)[len(prefix):])
        if len(found) >= MAX_EVENTS:
            break
    return tuple(sorted(found))


def _glob_escape(value: str) -> str:
    """A literal for Redis' MATCH (flag keys may hold * ? [ ] \\)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in value)


def experiment_report(client: Any, env: str, key: str, event: str) -> dict[str, Any]:
    """``flagedge insights experiment KEY --event NAME --json`` (the admin route's reading:
    the stored document under the environment's hashing generation)."""
    state = read_state(client, env)
    if not state.exists:
        raise usage.NotAnExperiment(f"environment {env!r} not found")
    doc = state.document().to_json()
    doc.pop("$fractionalHash", None)
    return usage.experiment_result(client, env, key, event, doc,
                                   state.meta.get("fractional_hash", "v2"))


class InsightPages:
    def __init__(self, ui: UiRoutes):
        self.ui = ui

    def routes(self) -> list[BaseRoute]:
        return [Route("/ui/experiments", self.experiments, methods=["GET"]),
                Route("/ui/experiments/{key:path}", self.experiment, methods=["GET"]),
                Route("/ui/explain", self.explain, methods=["GET"])]

    async def experiments(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        found, error = await self._experiments(who)
        return self.ui.render("experiments.html", nav="experiments", who=who, view=view,
                               experiments=found, error=error)

    async def _experiments(self, who: SignedIn) -> tuple[list[Experiment], str]:
        flag_set = self.ui.store.get(who.session.env)
        if flag_set is None:
            return [], "This proxy has not loaded the environment's rules yet."
        shown = [Experiment(k, flag_set.flags[k].experiment or "",
                            str(flag_set.flags[k].metadata.get("description", "")), ())
                 for k in sorted(flag_set.experiments)]
        if self.ui.settings.flags is not None:
            return shown, "Results need Redis (this proxy serves a rules file)."
        try:
            client = await asyncio.to_thread(self.ui.redis)
            return [Experiment(e.key, e.revision, e.description, await asyncio.to_thread(
                tracked_events, client, who.session.env, e.key, e.revision))
                for e in shown], ""
        except (RedisError, OSError) as exc:
            return shown, f"Redis is unreachable ({type(exc).__name__}): no results to show."

    async def experiment(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        key = request.path_params["key"]
        event = request.query_params.get("event", "")[:200]
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        report, error, status = None, "", 200
        if not event:
            error, status = "Choose the tracked event to read the results for.", 200
        elif self.ui.settings.flags is not None:
            error, status = "Results need Redis (this proxy serves a rules file).", 503
        else:
            try:
                report = await asyncio.to_thread(
                    lambda: experiment_report(self.ui.redis(), who.session.env, key, event))
            except usage.NotAnExperiment as exc:
                error, status = str(exc), 404
            except (RedisError, OSError, LayoutTooNew) as exc:
                error, status = f"Redis is unreachable ({type(exc).__name__}).", 503
        return self.ui.render("experiment.html", status, nav="experiments", who=who,
                               view=view, key=key, event=event, report=report, error=error)

    async def explain(self, request: Request) -> Response:
        who = await self.ui.signed_in(request)
        if isinstance(who, Response):
            return who
        flag = request.query_params.get("flag", "")
        raw_context = request.query_params.get("context", "")
        view = await asyncio.to_thread(self.ui.read, who.session.env)
        flag_set = self.ui.store.get(who.session.env)
        answer, error = None, ""
        if flag_set is None:
            error = "This proxy has not loaded the environment's rules yet."
        elif flag:
            context = self._context(raw_context)
            if isinstance(context, str):
                error = context
            else:
                answer = explanation(who.session.env, flag_set, flag, context)
                if answer.get("result", {}).get("errorCode") == "FLAG_NOT_FOUND":
                    answer, error = None, f"No flag {flag!r} in {who.session.env}."
        return self.ui.render("explain.html", 200, nav="explain", who=who, view=view,
                               flags=sorted(flag_set.flags) if flag_set else [],
                               flag=flag, context=raw_context or '{"targetingKey": "user-1"}',
                               answer=answer, error=error)

    def _context(self, raw: str) -> dict[str, Any] | str:
        """The evaluation context from the form, or why it cannot be one (in words)."""
        if len(raw) > MAX_CONTEXT_CHARS:
            return f"The context is too long (over {MAX_CONTEXT_CHARS} characters)."
        try:
            context = orjson.loads(raw or "{}")
        except orjson.JSONDecodeError as exc:
            return f"The context is not valid JSON: {exc}"
        if not isinstance(context, dict):
            return "The context must be a JSON object, e.g. {\"targetingKey\": \"user-1\"}."
        try:
            check_context(context, self.ui.settings.max_context_depth,
                          self.ui.settings.max_context_items)
        except BadContext as exc:
            return f"The context is refused: {exc.details}"
        return context
