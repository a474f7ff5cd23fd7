"""HTTP benchmark: bulk OFREP evaluation vs a bare Starlette echo app, same run, same load.

One uvicorn worker pinned to core 0 (taskset), load from wrk (Debian package; installed with
apt-get if missing) pinned to core 1, a Lua script posting varied bodies for 10,000 users:
(a) repeated users: contexts recur, so the result cache answers most requests;
(b) unique contexts: every request carries a never-seen attribute, so every request evaluates
    all 20 flags (static, targeting and fractional mixed).
Prints req/s, p99 and the flagedge/echo ratio for both. Goals: (a) >= 0.8x, (b) >= 0.5x.

    python bench/ofrep_http.py [--duration 20] [--rounds 5] [--connections 32]
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
from wrk import ensure_wrk, median, run_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder is sys.path[0]: put the project root first instead, so
# ``proxy`` imports from this checkout. (The issue names this script bench/http.py; a file of
# that name here would shadow the standard library's http package for every bench script.)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

USERS = 10_000
ENV = "bench"


# -- the bare baseline ----------------------------------------------------------------------
def echo_app():  # pragma: no cover - runs in the baseline process
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    return Starlette(routes=[Route("/ofrep/v1/evaluate/flags", echo, methods=["POST"])])


def serve_echo(port: int) -> None:  # pragma: no cover
    import uvicorn

    uvicorn.run(echo_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


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


LUA = r"""
local plans = {"free", "pro", "enterprise", "team"}
local countries = {"US", "DE", "FR", "GB", "XX"}
local unique = UNIQUE
local users = USERS
local counter = 0
local tid = 0
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args) math.randomseed(os.time() + tid * 7919) end
request = function()
  local n = math.random(1, users)
  local extra = ""
  if unique then
    counter = counter + 1
    extra = string.format(',"requestId":"%d-%d"', tid, counter)
  end
  local body = string.format(
    '{"context":{"targetingKey":"user-%d","email":"user%d@%s","plan":"%s","country":"%s",' ..
    '"age":%d,"appVersion":"%d.%d.%d"%s}}',
    n, n, (n % 10 == 0) and "example.com" or "mail.test", plans[n % 4 + 1],
    countries[n % 5 + 1], 13 + n % 70, 1 + n % 3, n % 5, n % 7, extra)
  return wrk.format("POST", nil, nil, body)
end
"""


def lua_script(path: Path, unique: bool, key: str | None) -> Path:
    text = LUA.replace("UNIQUE", "true" if unique else "false").replace("USERS", str(USERS))
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if key:
        headers += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    path.write_text(headers + text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Medians of alternating rounds: the machine's speed drifts by tens of % over seconds.
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)  # internal: baseline
    args = parser.parse_args(argv)
    if args.echo:
        serve_echo(args.echo)
        return 0

    from proxy.dev.devredis import free_port

    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="flagedge-bench-"))
    key = offline_files(tmp, flag_document(), ENV)
    flags = tmp / "flags.json"

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    echo_port, edge_port = free_port(), free_port()
    echo = subprocess.Popen(pinned(0, [sys.executable, __file__, "--echo", str(echo_port)]),
                            env=env)
    edge = subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--flags", str(flags), "--keys",
        str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port", str(edge_port),
        "--no-access-log", "--log-level", "warning"]), cwd=ROOT, env=env)
    rows = []
    try:
        wait_port(echo_port, echo)
        wait_port(edge_port, edge)
        import httpx

        probe = httpx.post(f"http://127.0.0.1:{edge_port}/ofrep/v1/evaluate/flags",
                           json={"context": {"targetingKey": "user-1"}},
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
        probe.raise_for_status()
        assert len(probe.json()["flags"]) == 20, probe.text
        for label, unique in (("(a) repeated users", False), ("(b) unique contexts", True)):
            targets = {}
            for name, port, auth in (("echo", echo_port, None), ("flagedge", edge_port, key)):
                url = f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags"
                targets[name] = (url, lua_script(tmp / f"{name}-{unique}.lua", unique, auth))
                if args.warmup:  # (a): fills the result cache with most of the 10,000 users
                    run_wrk(wrk, *targets[name], args.warmup, args.connections)
            # Alternate short rounds so that noise from other processes hits both alike.
            runs: dict[str, list] = {"echo": [], "flagedge": []}
            for _ in range(args.rounds):
                for name in ("echo", "flagedge"):
                    runs[name].append(run_wrk(wrk, *targets[name], args.duration / args.rounds,
                                              args.connections))
            rows.append((label, {name: median(r) for name, r in runs.items()}))
    finally:
        stop(echo, timeout=15)
        stop(edge, timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)

    goals = {"(a) repeated users": 0.8, "(b) unique contexts": 0.5}
    print(f"\nbulk OFREP, 20 flags, {USERS} users, 1 worker on core 0, wrk -c{args.connections} "
          f"on core 1, {args.duration:.0f}s each in {args.rounds} alternating rounds (medians)")
    print(f"{'workload':22} {'echo req/s':>11} {'echo p99':>9} {'edge req/s':>11} {'edge p99':>9}"
          f" {'ratio':>6} {'goal':>5}")
    ok = True
    for label, res in rows:
        (erps, ep99, _e_bad), (frps, fp99, f_bad) = res["echo"], res["flagedge"]
        ratio = frps / erps if erps else 0.0
        goal = goals[label]
        ok &= ratio >= goal and f_bad == 0
        print(f"{label:22} {erps:11.0f} {ep99:7.2f}ms {frps:11.0f} {fp99:7.2f}ms {ratio:6.2f}"
              f" {goal:5.1f}{'' if f_bad == 0 else f'  ({f_bad} non-2xx!)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
