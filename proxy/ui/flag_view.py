"""What the flag page (``proxy.ui.flag_page``) shows and decides, without I/O: which write
controls the signed-in key may use and why not (asked of ``proxy.release.authorization``,
never decided here), the edited JSON parsed with its error's line and column, the edited
flag inside the live document, the line diff against live, the impact preview summed per
variant, a rollout's steps with their times, and an admin API answer (``Outcome``) as the
sentence the page shows.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.release import authorization as authz
from proxy.storage.policy import Policy

# The flag page's write controls, each with the kind of write release/ knows it as.
CHANGES = ("save", "enable", "default", "percent", "rollout_start")
KILLS = ("disable", "rollout_pause", "rollout_abort")
LABELS = {"save": "Save", "disable": "Kill switch (disable)", "enable": "Enable",
          "default": "Set default", "percent": "Set percentage",
          "rollout_start": "Start rollout", "rollout_pause": "Pause rollout",
          "rollout_abort": "Abort rollout"}


@dataclass(frozen=True, slots=True)
class Control:
    """One write control: enabled or not, its label, and a sentence for the person: why it
    is disabled, or what pressing it does where that is not obvious (a request, a kill
    mark)."""

    enabled: bool
    label: str
    note: str = ""
    request: bool = False  # the write becomes a change request that needs approvals


def write_control(actor: authz.Actor, policy: Policy | None, kind: authz.WriteKind,
                  label: str, read_only: str = "") -> Control:
    """How ``actor``'s write of ``kind`` reaches the environment, as release/ routes it:
    at once, as a request (a protected environment: the change request it would apply), or
    not at all (disabled with release/'s reason)."""
    if read_only or policy is None:
        return Control(False, label, f"Read-only: {read_only or 'the policy is unknown'}")
    decision = authz.write_route(actor, policy, kind)
    needs = f"needs {policy.approvals} approval{'s' if policy.approvals != 1 else ''}"
    if decision.allowed and decision.route is authz.Route.DIRECT:
        marked = decision.mark is authz.Mark.KILL
        return Control(True, label, "Applies at once, marked kill (the environment is "
                                    "protected)." if marked else "")
    if decision.route is authz.Route.REQUEST or decision.reason == authz.APPROVAL_REQUIRED:
        # Protected: a change (or a kill without the kill role) becomes a request.
        return Control(True, "Propose" if label == LABELS["save"] else label,
                       f"The environment is protected: this becomes a change request that "
                       f"{needs}.", request=True)
    return Control(False, label, f"{decision.reason}.")


def flag_controls(actor: authz.Actor, policy: Policy | None, read_only: str = "",
                  rollout_state: str | None = None) -> dict[str, Control]:
    """Every write control of the flag page, by name (``CHANGES`` and ``KILLS``); a pause or
    an abort that does not fit the rollout's state is disabled saying so."""
    out = {name: write_control(actor, policy, authz.WriteKind.CHANGE, LABELS[name], read_only)
           for name in CHANGES}
    out.update({name: write_control(actor, policy, authz.WriteKind.KILL, LABELS[name],
                                    read_only) for name in KILLS})
    # (a start while one runs is release/'s to refuse, with its reason: the start form is
    # not reloaded as the rollout moves on, its buttons are)
    unfit = {"rollout_pause": "" if rollout_state == "running" else "No rollout is running.",
             "rollout_abort": "" if rollout_state in ("running", "paused")
             else "No rollout is running or paused."}
    for name, why in unfit.items():
        if why and out[name].enabled:
            out[name] = Control(False, out[name].label, why)
    return out


@dataclass(frozen=True, slots=True)
class ParseError:
    message: str
    line: int
    column: int


def parse_flag(text: str) -> dict[str, Any] | ParseError:
    """The editor's text as a flag (a JSON object), or where it is not one."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return ParseError(exc.msg, exc.lineno, exc.colno)
    if not isinstance(value, dict):
        return ParseError("a flag is a JSON object ({ ... })", 1, 1)
    return value


def pretty(value: Any) -> str:
    """A flag as the editor shows it: two-space indents, its keys in stored order."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def compact(value: Any) -> str:
    """A variant's value on one line."""
    return orjson.dumps(value).decode()


def with_flag(document: Mapping[str, Any], key: str, flag: Any) -> dict[str, Any]:
    """The live document with ``key`` replaced by the edited flag: what preview and push
    validate, so the edit is checked with the evaluators and metadata it lives among."""
    return {**document, "flags": {**dict(document.get("flags") or {}), key: flag}}


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str  # add | remove | same | hunk
    text: str


def json_diff(live: Any, edited: Any) -> list[DiffLine]:
    """The edited flag's lines against live (unified, two lines of context); [] when the
    two are the same JSON. Keys sorted on both sides: moving a key is not a change."""
    def lines_of(value: Any) -> list[str]:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                            ).decode().splitlines()
    lines = difflib.unified_diff(lines_of(live), lines_of(edited), "live", "edited", n=2,
                                 lineterm="")
    kinds = {"+": "add", "-": "remove", "@": "hunk", " ": "same"}
    return [DiffLine(kinds.get(line[:1], "same"), line) for line in lines
            if not line.startswith(("+++", "---"))]


@dataclass(frozen=True, slots=True)
class VariantShift:
    variant: str
    leaving: int  # sampled users who have this variant now and will not
    arriving: int  # sampled users who will have it and do not now


def variant_shifts(transitions: list[Mapping[str, Any]]) -> list[VariantShift]:
    """The preview's ``from -> to: count`` transitions summed per variant."""
    leaving: dict[str, int] = {}
    arriving: dict[str, int] = {}
    for t in transitions:
        leaving[t["from"]] = leaving.get(t["from"], 0) + int(t["count"])
        arriving[t["to"]] = arriving.get(t["to"], 0) + int(t["count"])
    return [VariantShift(v, leaving.get(v, 0), arriving.get(v, 0))
            for v in sorted({*leaving, *arriving})]


@dataclass(frozen=True, slots=True)
class Step:
    number: int  # 1-based
    percent: int
    begins: float  # Unix seconds
    current: bool


def rollout_steps(status: Mapping[str, Any]) -> list[Step]:
    """A rollout's steps (``rollout.status`` JSON) with when each begins and which is in
    force (``step`` is 1-based; 0 before the start or once aborted)."""
    return [Step(n, int(p), float(status["start"]) + (n - 1) * float(status["every"]),
                 n == status.get("step"))
            for n, p in enumerate(status["steps"], 1)]


def parse_steps(text: str) -> list[int] | str:
    """``"5, 25, 50, 100"`` -> [5, 25, 50, 100], or what is wrong (the values themselves
    are release/'s to check)."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        return "Steps: whole percentages separated by commas (5,25,50,100)."


def op_body(form: Mapping[str, str]) -> dict[str, Any] | str:
    """A switch's form as ``FlagsApi.edit``'s body (``op`` and what it takes), or what is
    wrong with the percentage; the handler checks the rest."""
    op = form.get("op", "")
    body: dict[str, Any] = {"op": op}
    if op in ("default", "percent") and form.get("variant"):
        body["variant"] = form["variant"]
    if op == "percent":
        try:
            body["percent"] = int(form.get("percent", ""))
        except ValueError:
            return "Percentage: a whole number from 0 to 100."
    if form.get("message", "").strip():
        body["message"] = form["message"].strip()
    return body


@dataclass(frozen=True, slots=True)
class Written:
    """An action's answer as the page says it."""

    kind: str  # written | proposed | noop | conflict | refused
    text: str
    version: int | None = None
    request_id: int | None = None
    problems: tuple[Mapping[str, str], ...] = ()


def written(status: int, data: Any, error: str = "", problems: tuple[Any, ...] = (), *,
            approvals: int = 0, base_version: int | None = None) -> Written:
    """An admin API answer (push, a request, a one-liner, a rollout) in words."""
    body = data if isinstance(data, dict) else {}
    if status == 409 and body.get("errorCode") == "CONFLICT":
        return Written("conflict", conflict_text(body.get("version"), base_version))
    if status >= 400 and problems:  # (the error repeats them: list them once, with paths)
        n = len(problems)
        return Written("refused", f"Nothing was written: {n} problem{'s' if n != 1 else ''} "
                                  "in the document.", problems=problems)
    if status >= 400:
        return Written("refused", error or f"Refused ({status}).")
    request = body.get("request") if "request" in body else body if "content_hash" in body \
        else None
    if isinstance(request, dict):
        needs = f"needs {approvals} approval{'s' if approvals != 1 else ''}"
        return Written("proposed", f"Request #{request['id']} proposed: {needs}.",
                       request_id=int(request["id"]))
    version = body.get("version")
    if body.get("status") == "noop":
        return Written("noop", f"Nothing to change: version {version} already has it.",
                       version=version)
    marks = body.get("marks") or []
    return Written("written", f"Written as version {version}" +
                   (" (marked kill)." if "kill" in marks else
                    " (marked break-glass)." if "break_glass" in marks else "."),
                   version=version)


def conflict_text(live: Any, base: int | None) -> str:
    return (f"Conflict: version {live} is live, but you edited version {base}. Nothing was "
            "written: reload the page to see the live flag and redo your edit.")


def problem_path(path: str) -> str:
    """A problem's JSON path without the ``document: `` prefix the admin API gives it
    (``document: flags.KEY.defaultVariant`` -> ``flags.KEY.defaultVariant``)."""
    return path.removeprefix("document: ").removeprefix("document") or "(document)"


def dom_id(key: str) -> str:
    """An HTML id for a flag key (keys may hold spaces and any other character)."""
    return "f-" + hashlib.sha256(key.encode()).hexdigest()[:12]
