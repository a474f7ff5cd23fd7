"""HTTP benchmark: bulk OFREP evaluation vs two echo floors, same run, same load.

``flagedge serve`` as a new user runs it (its defaults: access log on, written to a file; no
warm-up: a user's first sight counts), one worker pinned to core 0 (taskset), load from wrk
(Debian package; installed with apt-get if missing) pinned to core 1, a Lua script posting
varied bodies for 10,000 users:
(a) repeated users: contexts recur, so the result cache answers most requests;
(b) unique contexts: every request carries a never-seen attribute (a request id: one that no
    rule reads, so the result cache, keyed on what the rules read, still answers);
(c) new users: every request a never-seen targetingKey, which fractional rollouts and
    several rules read: every request evaluates every flag.
Workloads (``--workload``): ``realistic`` (the default) is 20 flags with the targeting teams
write (nested if/and/or/in, sem_ver, starts_with, fractional behind conditions, $ref);
``mixed`` is the earlier one (7 static flags, simple rules, 6 fractional splits).
Two floors in the same run: a bare Starlette echo (what the goals read against: (a) >= 0.8x,
(b) and (c) >= 0.5x) and a raw ASGI echo on flagedge's own one-write protocol (what the HTTP layer
costs at best; the gap to it is what is left to win).

Large environments (issue 27), ``--flags N`` other than 20: ``scaled_document(N)`` (the 20
realistic flags copied, about half static beyond 20) and a third floor, the bare Starlette
echo answering a body of the size flagedge answers (what a 38 KB response costs the HTTP
layer). Goals at 350 flags, default configuration: repeated users >= 0.8x that same-size
echo; >= 6,900 req/s (Unleash Edge's published figure per core at 350 features) with every
context unique, read as the unique-contexts workload (b) (the issue's own figure of
1.1-2.6k was measured on it), new users (c) reported beside it; the worker's RSS after all
three workloads <= 300 MB (VmRSS; also shown after each). ``--curve`` measures 20, 100, 350
and 1,000 flags in one run (each size its own servers and floors): req/s and us per request
(one worker on one core: 1e6 / req/s) per workload, the goals read at 350.

    python bench/ofrep_http.py [--workload realistic|mixed] [--duration 20] [--rounds 5]
    python bench/ofrep_http.py --flags 350 --duration 10
    python bench/ofrep_http.py --curve [--curve-flags 20,100,350,1000] --duration 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import offline_files, pinned, stop
from report import Row, at_least, at_most, finish
from wrk import ensure_wrk, median, run_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder is sys.path[0]: put the project root first instead, so
# ``proxy`` imports from this checkout. (The issue names this script bench/http.py; a file of
# that name here would shadow the standard library's http package for every bench script.)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

USERS = 10_000
ENV = "bench"


# -- the two floors --------------------------------------------------------------------------
def echo_app():  # pragma: no cover - runs in the baseline process
    """The goals' baseline: the smallest Starlette app a team would write, echoing the body."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    return Starlette(routes=[Route("/ofrep/v1/evaluate/flags", echo, methods=["POST"])])


async def raw_echo(scope, receive, send) -> None:  # pragma: no cover - the floor process
    """What the HTTP layer costs at best: a bare ASGI callable (no framework) on flagedge's own
    protocol (one write per response, proxy.server.http_protocol)."""
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def sized_app(size: int):  # pragma: no cover - runs in the floor process
    """The echo app answering a JSON body of ``size`` bytes (flagedge's body size at large
    flag counts) instead of the request's: the same-size floor of issue 27."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answer = b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'

    async def echo(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route("/ofrep/v1/evaluate/flags", echo, methods=["POST"])])


def serve_floor(kind: str, port: int, size: int = 0) -> None:  # pragma: no cover
    import uvicorn

    if kind == "raw":
        from proxy.server.http_protocol import GatheringHttpToolsProtocol

        app, http = raw_echo, GatheringHttpToolsProtocol
    elif kind == "sized":
        app, http = sized_app(size), "httptools"
    else:
        app, http = echo_app(), "httptools"
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http=http, access_log=False,
                log_level="warning", lifespan="off" if kind == "raw" else "auto")


# -- the workload ---------------------------------------------------------------------------
def flag_document() -> dict:
    def static(variants: dict, default: str, state: str = "ENABLED") -> dict:
        return {"state": state, "variants": variants, "defaultVariant": default}

    onoff = {"on": True, "off": False}
    flags = {
        "static-bool": static(onoff, "on"),
        "static-string": static({"a": "alpha", "b": "beta"}, "a"),
        "static-int": static({"low": 10, "high": 100}, "low"),
        "static-float": static({"half": 0.5, "one": 1.0}, "half"),
        "static-object": static({"cfg": {"limit": 5, "mode": "fast"}, "none": {}}, "cfg"),
        "static-disabled": static(onoff, "off", state="DISABLED"),
        "static-banner": static({"x": "hello", "y": "bye"}, "y"),
        "premium-plan": {**static(onoff, "off"), "targeting": {
            "if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "on", "off"]}},
        "staff-email": {**static(onoff, "off"), "targeting": {
            "if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", None]}},
        "new-app": {**static(onoff, "off"), "targeting": {
            "if": [{"sem_ver": [{"var": "appVersion"}, ">=", "2.1.0"]}, "on", "off"]}},
        "country-copy": {**static({"us": "Howdy", "de": "Hallo", "xx": "Hello"}, "xx"),
                         "targeting": {"if": [{"==": [{"var": "country"}, "US"]}, "us",
                                              {"==": [{"var": "country"}, "DE"]}, "de", None]}},
        "beta-testers": {**static(onoff, "off"), "targeting": {"$ref": "is-beta"}},
        "age-gate": {**static({"adult": "full", "minor": "safe"}, "minor"), "targeting": {
            "if": [{"and": [{">=": [{"var": "age"}, 18]}, {"!=": [{"var": "country"}, "XX"]}]},
                   "adult", "minor"]}},
        "limits": {**static({"small": 10, "big": 1000}, "small"), "targeting": {
            "if": [{"or": [{"==": [{"var": "plan"}, "enterprise"]}, {">": [{"var": "age"}, 60]}]},
                   "big", None]}},
        "split-50": {**static(onoff, "off"), "targeting": {"fractional": [["on", 50], ["off", 50]]}},
        "split-3way": {**static({"a": "A", "b": "B", "c": "C"}, "a"), "targeting": {
            "fractional": [["a", 34], ["b", 33], ["c", 33]]}},
        "split-by-email": {**static(onoff, "off"), "targeting": {
            "fractional": [{"var": "email"}, ["on", 10], ["off", 90]]}},
        "rollout-pro": {**static(onoff, "off"), "targeting": {
            "if": [{"==": [{"var": "plan"}, "pro"]}, {"fractional": [["on", 25], ["off", 75]]},
                   "off"]}},
        "price-test": {**static({"p9": 9.99, "p12": 12.5, "p15": 15}, "p9"), "targeting": {
            "fractional": [["p9", 1], ["p12", 1], ["p15", 1]]}},
        "layout-split": {**static({"grid": {"cols": 3}, "list": {"cols": 1}}, "grid"),
                         "targeting": {"fractional": [["grid", 70], ["list", 30]]}},
    }
    assert len(flags) == 20
    return {"flags": flags, "$evaluators": {"is-beta": {
        "if": [{"in": [{"var": "targetingKey"}, ["user-1", "user-2", "user-3"]]}, "on", "off"]}},
        "metadata": {"team": "bench"}}


def realistic_document() -> dict:
    """20 flags with the targeting teams write (issue 21's workload, the default): nested
    ``if``/``and``/``or``/``in``, ``sem_ver``, ``starts_with``/``ends_with``, ``fractional``
    rollouts behind conditions and shared ``$evaluators`` through ``$ref``; two kill switches
    and one plain default, as real environments keep a few."""
    onoff = {"on": True, "off": False}

    def flag(targeting: dict | None, variants: dict | None = None, default: str = "off",
             state: str = "ENABLED") -> dict:
        body = {"state": state, "variants": variants or onoff, "defaultVariant": default}
        return {**body, "targeting": targeting} if targeting is not None else body

    var = lambda name: {"var": name}  # noqa: E731
    paid = {"in": [var("plan"), ["pro", "enterprise", "team"]]}
    flags = {
        "checkout-v2": flag({"if": [{"and": [paid, {"sem_ver": [var("appVersion"), ">=", "2.0.0"]}]},
                                    {"fractional": [["on", 50], ["off", 50]]}, "off"]}),
        "new-onboarding": flag({"if": [{"$ref": "internal"}, "on",
                                       {"fractional": [["on", 20], ["off", 80]]}]}),
        "dark-mode": flag({"if": [{"sem_ver": [var("appVersion"), "^", "2.1.0"]}, "on", "off"]}),
        "search-ranking": flag({"if": [{"$ref": "internal"}, "ml",
                                       {"fractional": [var("targetingKey"), ["ml", 10],
                                                       ["classic", 90]]}]},
                               {"ml": "ml-v3", "classic": "bm25"}, "classic"),
        "pricing-page": flag({"if": [{"==": [var("country"), "US"]},
                                     {"fractional": [["a", 34], ["b", 33], ["c", 33]]},
                                     {"in": [var("country"), ["DE", "FR"]]}, "b", "a"]},
                             {"a": {"layout": "grid", "tiers": 3},
                              "b": {"layout": "list", "tiers": 3},
                              "c": {"layout": "grid", "tiers": 4}}, "a"),
        "beta-banner": flag({"if": [{"$ref": "beta"}, "on", "off"]}),
        "max-uploads": flag({"if": [{"==": [var("plan"), "enterprise"]}, "big",
                                    {"and": [paid, {">=": [var("age"), 21]}]}, "medium",
                                    "small"]},
                            {"small": 5, "medium": 50, "big": 500}, "small"),
        "gdpr-consent-v2": flag({"if": [{"in": [var("country"), ["DE", "FR", "GB", "IE", "NL"]]},
                                        "on", "off"]}),
        "mobile-nav": flag({"if": [{"and": [{"starts_with": [var("appVersion"), "3."]},
                                            {"!=": [var("country"), "XX"]}]}, "on", "off"]}),
        "support-chat": flag({"if": [{"or": [{"==": [var("plan"), "enterprise"]},
                                             {"$ref": "internal"}]}, "on",
                                     {"fractional": [["on", 5], ["off", 95]]}]}),
        "recommendations": flag({"if": [{"and": [{">=": [var("age"), 18]},
                                                 {"sem_ver": [var("appVersion"), ">=", "1.4.0"]},
                                                 paid]}, "on", "off"]}),
        "api-rate-limit": flag({"if": [{"==": [var("plan"), "free"]}, "low",
                                       {"in": [var("plan"), ["pro", "team"]]}, "mid", "high"]},
                               {"low": 100, "mid": 1000, "high": 10000}, "low"),
        "promo-discount": flag({"if": [{"and": [{"in": [var("country"), ["US", "GB"]]},
                                                {"<": [var("age"), 30]}]},
                                       {"fractional": [["ten", 50], ["twenty", 50]]}, "none"]},
                               {"none": 0.0, "ten": 0.1, "twenty": 0.2}, "none"),
        "legacy-export": flag({"if": [{"sem_ver": [var("appVersion"), "<", "1.2.0"]}, "on",
                                      "off"]}),
        "staff-tools": flag({"if": [{"$ref": "internal"}, "on", "off"]}),
        "welcome-copy": flag({"if": [{"==": [var("country"), "DE"]}, "de",
                                     {"==": [var("country"), "FR"]}, "fr", "en"]},
                             {"en": "Welcome", "de": "Willkommen", "fr": "Bienvenue"}, "en"),
        "perf-sampling": flag({"fractional": [["on", 1], ["off", 99]]}),
        "kill-payments-v3": flag(None, state="DISABLED"),
        "kill-legacy-sync": flag(None, default="on"),
        "footer-links": flag(None, {"v1": {"links": ["docs", "blog"]},
                                     "v2": {"links": ["docs", "blog", "status"]}},
                             "v2"),
    }
    assert len(flags) == 20
    return {"flags": flags, "$evaluators": {
        "internal": {"or": [{"ends_with": [var("email"), "@example.com"]},
                            {"in": [var("targetingKey"), ["user-1", "user-2", "user-3"]]}]},
        "beta": {"and": [{"starts_with": [var("targetingKey"), "user-1"]},
                         {"sem_ver": [var("appVersion"), ">=", "2.0.0"]}]}},
        "metadata": {"team": "bench"}}


WORKLOADS = {"realistic": realistic_document, "mixed": flag_document}


def scaled_document(n: int) -> dict:
    """``n`` flags for the scaling curve (issue 27): the 20 realistic flags, then copies of
    them (``NAME-2``, ...) alternating with static flags, so that about half of a large set
    is static as in real environments."""
    base = realistic_document()
    flags = dict(base["flags"])
    if n <= len(flags):
        return {**base, "flags": dict(list(flags.items())[:n])}
    targeted = [k for k, f in base["flags"].items() if "targeting" in f]
    copy = 2
    while len(flags) < n:
        for key in targeted:
            if len(flags) >= n:
                break
            flags[f"{key}-{copy}"] = base["flags"][key]
            if len(flags) < n:
                flags[f"static-{copy}-{key}"] = {
                    "state": "ENABLED", "variants": {"on": True, "off": False},
                    "defaultVariant": "on" if copy % 2 else "off"}
        copy += 1
    return {**base, "flags": flags}


LUA = r"""
local plans = {"free", "pro", "enterprise", "team"}
local countries = {"US", "DE", "FR", "GB", "XX"}
local unique = UNIQUE
local new_users = NEWUSERS
local users = USERS
local counter = 0
local tid = 0
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args) math.randomseed(os.time() + tid * 7919) end
request = function()
  local n = math.random(1, users)
  local extra = ""
  local who = "user-" .. n
  counter = counter + 1
  if unique then
    extra = string.format(',"requestId":"%d-%d"', tid, counter)
  end
  if new_users then
    who = string.format("new-%d-%d", tid, counter)
  end
  local body = string.format(
    '{"context":{"targetingKey":"%s","email":"user%d@%s","plan":"%s","country":"%s",' ..
    '"age":%d,"appVersion":"%d.%d.%d"%s}}',
    who, n, (n % 10 == 0) and "example.com" or "mail.test", plans[n % 4 + 1],
    countries[n % 5 + 1], 13 + n % 70, 1 + n % 3, n % 5, n % 7, extra)
  return wrk.format("POST", nil, nil, body)
end
"""


# The three workloads: repeated users; unique contexts (each carries a never-seen attribute no
# rule reads); new users (each a never-seen targetingKey, which rules and fractional read).
REPEATED, UNIQUE, NEW_USERS = "repeated", "unique", "new-users"


def lua_script(path: Path, unique: bool | str, key: str | None) -> Path:
    """``unique``: one of the workloads (True/False: unique contexts / repeated users)."""
    mode = unique if isinstance(unique, str) else UNIQUE if unique else REPEATED
    text = (LUA.replace("UNIQUE", "true" if mode == UNIQUE else "false")
            .replace("NEWUSERS", "true" if mode == NEW_USERS else "false")
            .replace("USERS", str(USERS)))
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if key:
        headers += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    path.write_text(headers + text)
    return path


FLOORS = ("echo", "raw")  # the goals read against "echo"; "raw" shows what is left
SIZED = "sized"  # issue 27: the echo answering a body of flagedge's size
GOALS = {REPEATED: 0.8, UNIQUE: 0.5, NEW_USERS: 0.5}  # x the Starlette echo
LABELS = (("repeated users", REPEATED), ("unique contexts", UNIQUE), ("new users", NEW_USERS))
# Issue 27, at 350 flags with default settings
LARGE = 350
UNLEASH_RPS = 6_900  # Unleash Edge's published req/s per core with 350 features
SIZED_GOAL = 0.8  # repeated users / the same-size echo
RSS_GOAL_MB = 300
CURVE = (20, 100, 350, 1000)


def document_for(args: argparse.Namespace, flags: int) -> dict:
    return WORKLOADS[args.workload]() if flags == 20 else scaled_document(flags)


def start_floor(kind: str, env: dict, size: int = 0) -> tuple[subprocess.Popen, int]:
    from proxy.dev.devredis import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--floor", kind, "--port", str(port), "--size", str(size)]
    return subprocess.Popen(pinned(0, cmd), env=env), port


def start_servers(tmp: Path, args: argparse.Namespace, flags: int) -> tuple[dict, str]:
    """The floors and ``flagedge serve`` (its defaults, offline flags + keys), each pinned
    to core 0; returns {name: (process, port)} and the client key. The same-size floor is
    started once flagedge's body size is known (``add_sized``)."""
    from proxy.dev.devredis import free_port

    key = offline_files(tmp, document_for(args, flags), ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    procs: dict = {floor: start_floor(floor, env) for floor in FLOORS}
    port = free_port()
    logging = ["--no-access-log"] if args.no_access_log else []
    out = open(tmp / "access.log", "wb")  # the log goes to a file, as in production  # noqa: SIM115
    procs["flagedge"] = (subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--flags", str(tmp / "flags.json"), "--keys",
        str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port", str(port),
        *logging]), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), port)
    return procs, key


def probe(procs: dict, key: str, flags: int) -> int:
    """One bulk request to flagedge: it answers every flag; returns the body's size."""
    import httpx

    r = httpx.post(f"http://127.0.0.1:{procs['flagedge'][1]}/ofrep/v1/evaluate/flags",
                   json={"context": {"targetingKey": "user-1"}},
                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
    r.raise_for_status()
    assert len(r.json()["flags"]) == flags, r.text
    return len(r.content)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(wrk: str, tmp: Path, procs: dict, key: str, unique: str,
            args: argparse.Namespace) -> dict:
    """Alternating short rounds (the machine's speed drifts by tens of % over seconds, and
    noise then hits every server alike); medians per server."""
    targets = {}
    for name, (_proc, port) in procs.items():
        url = f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags"
        auth = key if name == "flagedge" else None
        targets[name] = (url, lua_script(tmp / f"{name}-{unique}.lua", unique, auth))
        if args.warmup:
            run_wrk(wrk, *targets[name], args.warmup, args.connections)
    runs: dict[str, list] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name in targets:
            runs[name].append(run_wrk(wrk, *targets[name], args.duration / args.rounds,
                                      args.connections))
    return {name: median(r) for name, r in runs.items()}


def run_size(wrk: str, args: argparse.Namespace, flags: int, sized: bool) -> dict:
    """Servers for one document size and the three workloads against them: {"runs":
    {workload: {server: WrkRun}}, "body": bytes, "rss": [MB after each workload]}."""
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-bench-"))
    procs, key = start_servers(tmp, args, flags)
    point: dict = {"flags": flags, "runs": {}, "rss": []}
    try:
        for proc, port in procs.values():
            wait_port(port, proc)
        point["body"] = probe(procs, key, flags)
        if sized:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
            procs[SIZED] = start_floor(SIZED, env, point["body"])
            wait_port(procs[SIZED][1], procs[SIZED][0])
        for _label, workload in LABELS:
            point["runs"][workload] = measure(wrk, tmp, procs, key, workload, args)
            point["rss"].append(rss_mb(procs["flagedge"][0].pid))
    finally:
        for proc, _port in procs.values():
            stop(proc, timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)
    return point


def rows_for(label: str, unique: str, res: dict) -> list[Row]:
    edge, echo, raw = res["flagedge"], res["echo"], res["raw"]
    seen = (f"flagedge {edge.rps:,.0f} req/s p99 {edge.p99_ms:.1f} ms; echo {echo.rps:,.0f}; "
            f"raw ASGI {raw.rps:,.0f}")
    lost = sum(r.failed for r in res.values())
    rows = [at_least(f"{label}: flagedge / Starlette echo", edge.rps / echo.rps, GOALS[unique],
                     seen),
            Row(f"{label}: flagedge / raw ASGI echo (floor)", "report", round(edge.rps / raw.rps, 3),
                seen, True, "x")]
    if lost:
        rows.append(at_most(f"{label}: failed requests (non-2xx, socket errors)", lost, 0))
    return rows


def report(what: str, measured: float, seen: str, unit: str = "") -> Row:
    return Row(what, "report", round(measured, 3), seen, True, unit)


def large_rows(point: dict) -> list[Row]:
    """Issue 27's goals for one document size: goals at 350 flags, reports elsewhere."""
    flags, body = point["flags"], point["body"]
    goal = flags == LARGE
    rows: list[Row] = []
    for label, workload in LABELS:
        res = point["runs"][workload]
        edge, echo, sized, raw = res["flagedge"], res["echo"], res[SIZED], res["raw"]
        seen = (f"flagedge {edge.rps:,.0f} req/s ({1e6 / edge.rps:.0f} us) p99 "
                f"{edge.p99_ms:.1f} ms; same-size echo {sized.rps:,.0f} ({body / 1024:.1f} KB); "
                f"echo {echo.rps:,.0f}; raw ASGI {raw.rps:,.0f}")
        name = f"{flags} flags, {label}"
        ratio = edge.rps / sized.rps
        rows.append(at_least(f"{name}: flagedge / same-size echo", ratio, SIZED_GOAL, seen)
                    if goal and workload == REPEATED else
                    report(f"{name}: flagedge / same-size echo", ratio, seen, "x"))
        if workload == UNIQUE and goal:
            rows.append(at_least(f"{name}: req/s (Unleash Edge: {UNLEASH_RPS:,})", edge.rps,
                                 UNLEASH_RPS, seen, unit=""))
        else:
            rows.append(report(f"{name}: req/s", edge.rps, seen))
        rows.append(report(f"{name}: us per request (1 core)", 1e6 / edge.rps, seen, "us"))
        lost = sum(r.failed for r in res.values())
        if lost:
            rows.append(at_most(f"{name}: failed requests (non-2xx, socket errors)", lost, 0))
    rss = point["rss"]
    seen = "after each workload: " + ", ".join(f"{v:.0f}" for v in rss) + " MB"
    rows.append(at_most(f"{flags} flags: worker RSS after the runs (MB)", rss[-1], RSS_GOAL_MB,
                        seen) if goal else report(f"{flags} flags: worker RSS (MB)", rss[-1], seen))
    return rows


def curve_table(points: list[dict]) -> str:
    lines = [f"{'flags':>6} {'body KB':>8} {'workload':16} {'flagedge':>9} {'us/req':>7} "
             f"{'same-size echo':>15} {'ratio':>6} {'echo':>8} {'raw ASGI':>9} {'RSS MB':>7}"]
    for point in points:
        for (label, workload), rss in zip(LABELS, point["rss"], strict=True):
            res = point["runs"][workload]
            edge, sized = res["flagedge"], res.get(SIZED)
            same = f"{sized.rps:>15,.0f} {edge.rps / sized.rps:>6.2f}" if sized else f"{'':>22}"
            lines.append(f"{point['flags']:>6} {point['body'] / 1024:>8.1f} {label:16} "
                         f"{edge.rps:>9,.0f} {1e6 / edge.rps:>7.0f} {same} "
                         f"{res['echo'].rps:>8,.0f} {res['raw'].rps:>9,.0f} {rss:>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="realistic")
    parser.add_argument("--flags", type=int, default=20,
                        help="flags in the document: the realistic 20, scaled (about half "
                             "static beyond 20)")
    parser.add_argument("--curve", action="store_true",
                        help="issue 27's cost curve: every size of --curve-flags in one run")
    parser.add_argument("--curve-flags", default=",".join(map(str, CURVE)))
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of load before measuring (default none: a user's first "
                             "sight counts)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-access-log", action="store_true",
                        help="serve without the access log (not the default configuration)")
    parser.add_argument("--floor", choices=(*FLOORS, SIZED), help=argparse.SUPPRESS)  # internal
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:
        serve_floor(args.floor, args.port, args.size)
        return 0

    wrk = ensure_wrk()
    sizes = [int(n) for n in args.curve_flags.split(",")] if args.curve else [args.flags]
    points = [run_size(wrk, args, n, sized=args.curve or n != 20) for n in sizes]
    rows: list[Row] = []
    for point in points:
        if point["flags"] == 20 and not args.curve:
            for label, workload in LABELS:
                rows += rows_for(label, workload, point["runs"][workload])
        else:
            rows += large_rows(point)
    print(f"\nbulk OFREP, {args.workload} rules ({', '.join(map(str, sizes))} flags), {USERS} "
          f"users, {'access log off' if args.no_access_log else 'default settings'}, 1 worker on "
          f"core 0, wrk -c{args.connections} on core 1, {args.duration:.0f}s per server in "
          f"{args.rounds} alternating rounds (medians), warm-up {args.warmup:.0f}s")
    if args.curve or sizes != [20]:
        print(curve_table(points))
    details = {"workload": args.workload, "flags": sizes, "duration": args.duration,
               "rounds": args.rounds, "warmup": args.warmup,
               "access_log": not args.no_access_log,
               "points": [{"flags": p["flags"], "body_bytes": p["body"], "rss_mb": p["rss"],
                           "rps": {w: {name: round(r.rps) for name, r in runs.items()}
                                   for w, runs in p["runs"].items()}} for p in points]}
    return finish("ofrep_http", rows, details)


if __name__ == "__main__":
    sys.exit(main())
