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

    python bench/ofrep_http.py [--workload realistic|mixed] [--duration 20] [--rounds 5]
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


def serve_floor(kind: str, port: int) -> None:  # pragma: no cover
    import uvicorn

    if kind == "raw":
        from proxy.server.http_protocol import GatheringHttpToolsProtocol

        app, http = raw_echo, GatheringHttpToolsProtocol
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
GOALS = {REPEATED: 0.8, UNIQUE: 0.5, NEW_USERS: 0.5}  # x the Starlette echo


def start_servers(tmp: Path, args: argparse.Namespace) -> tuple[dict, str]:
    """The two floors and ``flagedge serve`` (its defaults, offline flags + keys), each pinned
    to core 0; returns {name: (process, port)} and the client key."""
    from proxy.dev.devredis import free_port

    document = (WORKLOADS[args.workload]() if args.flags == 20
                else scaled_document(args.flags))
    key = offline_files(tmp, document, ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    procs: dict = {}
    for floor in FLOORS:
        port = free_port()
        procs[floor] = (subprocess.Popen(pinned(0, [sys.executable, __file__, "--floor", floor,
                                                    "--port", str(port)]), env=env), port)
    port = free_port()
    logging = ["--no-access-log"] if args.no_access_log else []
    out = open(tmp / "access.log", "wb")  # the log goes to a file, as in production  # noqa: SIM115
    procs["flagedge"] = (subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--flags", str(tmp / "flags.json"), "--keys",
        str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port", str(port),
        *logging]), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), port)
    return procs, key


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="realistic")
    parser.add_argument("--flags", type=int, default=20,
                        help="flags in the document: the realistic 20, scaled (about half "
                             "static beyond 20)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of load before measuring (default none: a user's first "
                             "sight counts)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-access-log", action="store_true",
                        help="serve without the access log (not the default configuration)")
    parser.add_argument("--floor", choices=FLOORS, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:
        serve_floor(args.floor, args.port)
        return 0

    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-bench-"))
    procs, key = start_servers(tmp, args)
    rows: list[Row] = []
    try:
        for proc, port in procs.values():
            wait_port(port, proc)
        import httpx

        probe = httpx.post(f"http://127.0.0.1:{procs['flagedge'][1]}/ofrep/v1/evaluate/flags",
                           json={"context": {"targetingKey": "user-1"}},
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
        probe.raise_for_status()
        assert len(probe.json()["flags"]) == args.flags, probe.text
        for label, unique in (("repeated users", REPEATED), ("unique contexts", UNIQUE),
                              ("new users", NEW_USERS)):
            rows += rows_for(label, unique, measure(wrk, tmp, procs, key, unique, args))
    finally:
        for proc, _port in procs.values():
            stop(proc, timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbulk OFREP, {args.workload} rules ({args.flags} flags), {USERS} users, "
          f"{'access log off' if args.no_access_log else 'default settings'}, 1 worker on "
          f"core 0, wrk -c{args.connections} on core 1, {args.duration:.0f}s per server in "
          f"{args.rounds} alternating rounds (medians), warm-up {args.warmup:.0f}s")
    return finish("ofrep_http", rows, {"workload": args.workload, "flags": args.flags,
                                       "duration": args.duration,
                                       "rounds": args.rounds, "warmup": args.warmup,
                                       "access_log": not args.no_access_log})


if __name__ == "__main__":
    sys.exit(main())
