"""Reading insights back (``flagedge insights flags|stale``; later the admin API and the UI):
exposures per flag and variant over a window, unique users, last evaluated, whether usage is
complete, and stale flags (DESIGN §11). Windows of up to ``MINUTE_WINDOW_S`` read the
per-minute hashes; longer ones read whole UTC days."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.evaluation.documents import compile_document
from proxy.insights import results
from proxy.insights.results import Arm
from proxy.model import FractionalHash
from proxy.storage import insights as keys
from proxy.storage.replies import text

MINUTE_WINDOW_S = 2 * 86_400  # what the per-minute hashes are kept for
COMPLETE, PARTLY_UNKNOWN = "complete", "partly unknown"


def exposure_keys(env: str, start: float, end: float) -> list[str]:
    if end - start <= MINUTE_WINDOW_S:
        return [keys.minute_key(env, m) for m in keys.minutes_between(start, end)]
    return [keys.day_key(env, d) for d in keys.days_between(start, end)]


def read_exposures(client: Any, env: str, start: float, end: float
                   ) -> dict[str, dict[str, dict[str, int]]]:
    """flag -> variant -> reason -> exposures in the window."""
    pipe = client.pipeline(transaction=False)
    for key in exposure_keys(env, start, end):
        pipe.hgetall(key)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for reply in pipe.execute():
        for raw, n in reply.items():
            parsed = keys.parse_field(raw)
            if parsed is None:
                continue
            flag, variant, reason = parsed
            by_reason = out.setdefault(flag, {}).setdefault(variant, {})
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    return out


def usage_state(client: Any, env: str, start: float) -> str:
    """"partly unknown" when a key took rules to evaluate elsewhere in the window and
    reported no exposures in it (flagd sync, a rules stream without the exposure hook)."""
    consumers = _since(client.hgetall(keys.consumers_key(env)), start)
    reporters = _since(client.hgetall(keys.reporters_key(env)), start)
    return PARTLY_UNKNOWN if consumers - reporters else COMPLETE


def _since(stamps: Mapping[Any, Any], start: float) -> set[str]:
    return {text(k) for k, t in stamps.items() if float(t) >= start}


def unique_users(client: Any, env: str, start: float, end: float) -> int:
    return int(client.pfcount(*[keys.users_key(env, d) for d in keys.days_between(start, end)]))


def flags_report(client: Any, env: str, flags: Iterable[str], start: float, end: float
                 ) -> dict[str, Any]:
    """``insights flags --json``: every flag of the environment, most exposed first."""
    exposures = read_exposures(client, env, start, end)
    seen = {text(k): int(v) for k, v in client.hgetall(keys.seen_key(env)).items()}
    rows = []
    for flag in flags:
        variants = exposures.get(flag, {})
        rows.append({"flag": flag, "last_evaluated": seen.get(flag),
                     "variants": sorted(({"variant": v or None,
                                          "exposures": sum(by.values()), "by_reason": by}
                                         for v, by in variants.items()),
                                        key=lambda r: -r["exposures"])})
    rows.sort(key=lambda r: (-sum(v["exposures"] for v in r["variants"]), r["flag"]))
    return {"env": env, "since": start, "usage": usage_state(client, env, start),
            "unique_users": unique_users(client, env, start, end), "flags": rows}


def stale_report(client: Any, env: str, flags: Iterable[str], start: float, end: float
                 ) -> dict[str, Any]:
    """``insights stale --json``: flags unused in the window, or serving one variant to
    everyone; a flag first served within the window is too young to judge. Where usage is
    partly unknown, an unused flag may be in use in-process: it is listed as unknown."""
    exposures = read_exposures(client, env, start, end)
    born = {text(k): int(v) for k, v in client.hgetall(keys.born_key(env)).items()}
    usage = usage_state(client, env, start)
    out = []
    for flag in flags:
        if born.get(flag, end) > start:
            continue  # first served within the window (or not yet flushed): too young
        variants = {v for v, by in exposures.get(flag, {}).items() if sum(by.values())}
        if not variants:
            reason = ("no exposures at the edge; in-process consumers report nothing, so it "
                      "may be in use" if usage == PARTLY_UNKNOWN else "never evaluated")
            out.append({"flag": flag, "reason": reason})
        elif len(variants) == 1:
            only = next(iter(variants)) or "(no variant)"
            out.append({"flag": flag, "reason": f"served only {only!r} to everyone"})
    return {"env": env, "unused": end - start, "usage": usage, "flags": out}


def experiment_arms(client: Any, env: str, flag: str, revision: str, event: str,
                    variants: Iterable[str]) -> list[Arm]:
    """Assigned and converted users per variant of one experiment revision."""
    base = keys.experiment_key(env, flag, revision)
    assigned = {text(k): int(v) for k, v in client.hgetall(base + ":assigned").items()}
    converted = {text(k): int(v)
                 for k, v in client.hgetall(f"{base}:converted:{event}").items()}
    return [Arm(v, assigned.get(v, 0), converted.get(v, 0)) for v in variants]


class NotAnExperiment(LookupError):
    """The flag is missing, or is no experiment (the message says which and why)."""


def experiment_result(client: Any, env: str, flag_key: str, event: str,
                      document: Mapping[str, Any], fractional_hash: str) -> dict[str, Any]:
    """``insights experiment --json`` of ``flag_key`` in ``env`` as stored (``document``,
    the environment's hashing generation): its current revision's counts and statistics."""
    generation = FractionalHash.parse(fractional_hash)
    flag = compile_document(dict(document), tolerant=True,
                            fractional_hash=generation).flags.get(flag_key)
    if flag is None:
        raise NotAnExperiment(f"flag {flag_key!r} not found in environment {env!r}")
    if flag.experiment is None:
        raise NotAnExperiment(
            f"{flag_key!r} is not an experiment: it needs metadata kind \"experiment\" or an "
            "experimentId, a fractional split, and no $flagd.timestamp")
    control = str(flag.metadata.get("control") or flag.default_variant
                  or next(iter(flag.variants)))
    arms = experiment_arms(client, env, flag_key, flag.experiment, event, flag.variants)
    weights = results.split_weights(flag.raw.get("targeting"),
                                    document.get("$evaluators")) or {}
    return results.experiment_report(flag_key, event, flag.experiment, arms, control, weights)


def minute_counts(client: Any, env: str, minutes: Iterable[str]
                  ) -> dict[str, dict[str, dict[str, int]]]:
    """minute -> flag -> variant ("" for none) -> exposures, for the UI's live view."""
    minutes = list(minutes)
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(keys.minute_key(env, minute))
    out: dict[str, dict[str, dict[str, int]]] = {}
    for minute, reply in zip(minutes, pipe.execute(), strict=True):
        per_flag: dict[str, dict[str, int]] = {}
        for raw, n in reply.items():
            parsed = keys.parse_field(raw)
            if parsed is not None:
                flag, variant, _reason = parsed
                per_flag.setdefault(flag, {})
                per_flag[flag][variant] = per_flag[flag].get(variant, 0) + int(n)
        out[minute] = per_flag
    return out
