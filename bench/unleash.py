"""HTTP benchmark: flagedge's bulk OFREP against Unleash Proxy, same toggles, same cores.

Issue 21's goal: flagedge >= 6x Unleash Proxy's throughput on the same rules and cores, "every
toggle for this user" on both sides. Unleash Proxy (``@unleash/proxy``, pinned in
bench/unleash/package.json with package-lock.json, installed here with ``npm ci`` when
node_modules is missing or holds another version) runs as its Docker image runs it:
``node dist/start`` with NODE_ENV=production, on the machine's Node.js (1.4.9, the release the
issue measured, asks for node >= 20; 1.4.19, the last 1.x, asks for >= 22 and measured
4.1-4.4k req/s here against 1.4.9's figure in the issue). Where npm or node is missing, the
rows are recorded as skipped (not measured), with a message.

Shape as bench/ofrep_http.py: ``flagedge serve`` with its defaults (access log on, to a file;
offline flags + one client key), then Unleash Proxy, each pinned to core 0 (taskset; every
thread of the node process with it); wrk -t1 -c32 on core 1; 10,000 users; short alternating
rounds, medians. flagedge gets bulk OFREP POSTs (ofrep_http's Lua script), Unleash Proxy its
frontend endpoint, ``GET /proxy?userId=..&email=..`` (the frontend SDKs' call: the toggles
enabled for this context, so a smaller answer than flagedge's, which lists all 20) with its
client key. Two workloads: repeated users (contexts recur) and new users (every request a
never-seen targetingKey / userId, so no per-user answer can be reused). Both servers warm up
for ``--warmup`` seconds first (default 2): the peer's JIT is part of how it runs, and a
ratio taken against a cold JIT would flatter flagedge.

Unleash Proxy needs an upstream Unleash API: a tiny static one here (``--upstream``: the
client API's ``GET /api/client/features`` with ETag, register and metrics POSTs answered 202)
serves the toggles; it runs pinned to core 1 and is asked once every 5 s (the proxy's default
refresh). The proxy's ``EXP_BOOTSTRAP_URL`` is experimental and still needs an upstream.

The toggles: realistic_document()'s 20 flags in Unleash's model (``RULES`` below):
- each ``if`` branch is one strategy, in order (the SDK takes the first strategy that holds);
  ``and`` is the constraints of one strategy; ``or`` is one strategy per disjunct; a value
  list is one constraint (IN / NOT_IN / STR_STARTS_WITH / STR_ENDS_WITH take value lists);
  ``==``/``in`` -> IN, ``!=`` -> NOT_IN, ``>=``/``<`` -> NUM_GTE/NUM_LT, ``starts_with`` /
  ``ends_with`` -> STR_STARTS_WITH / STR_ENDS_WITH, ``sem_ver <`` -> SEMVER_LT, ``sem_ver >=``
  -> SEMVER_LT inverted (Unleash servers offer SEMVER_EQ/GT/LT only: "not below", the UI's
  negation), ``sem_ver ^ 2.1.0`` (flagd: the same major version) -> not below 2.0.0 and below
  3.0.0;
- ``$ref``: the ``beta`` evaluator (an ``and``) is a segment; ``internal`` (an ``or``) cannot
  be one (a segment's constraints all hold) and becomes two strategies wherever it is used;
- boolean flags: on = the toggle enabled for the context, off = not enabled (absent from
  GET /proxy); a boolean ``fractional`` is a flexibleRollout of the "on" percentage,
  stickiness userId, groupId the flag's key; a DISABLED flag is a disabled toggle;
- other flags (string, number, object) are always enabled; each branch's value is a strategy
  variant (weight 1000) whose payload is the value (string / number / json); a ``fractional``
  is a flexibleRollout of 100 % with weighted strategy variants (weights x 10), stickiness
  userId. Strategies without a rollout are the ``default`` strategy (no hashing: the cheaper
  choice for the proxy).
Where it is not exact: (1) the bucketing: flagd's fractional and Unleash's rollouts hash
different strings with different seeds, so the same user can land in another bucket; the
proportions are the same, the users are not; (2) missing or malformed attributes: a context
without ``appVersion`` passes the inverted SEMVER_LT (">=") in Unleash and fails ``sem_ver`` in
flagd; without ``age``, NUM_LT fails where JSON Logic's ``<`` compares null as 0; without a
targetingKey (userId), flagd answers the default variant where Unleash's rollout does not hold
(the toggle falls through to its next strategy, or is off); (3) versions with a leading "v"
or a pre-release tag compare differently (node-semver vs flagedge: "v2.3.0" is 2.3.0 in
flagedge and no version in Unleash; "2.0.0-beta" is major 2 for ``^`` but below 2.0.0).
The workload sends every attribute, well formed, so only (1) applies to what is measured.

``--check`` runs the translation against both real servers: with every fractional pinned to
its first and then its last variant (both documents rewritten alike), all 20 answers must be
equal for 1,000 workload users and 2,000 edge contexts (``EDGES``: each attribute drawn on
its own from values at the rules' edges); with the real rules, the rule-only flags must be
equal and each fractional flag's proportions must agree within 5 sigma over 4,000 new users
(~40 s). Before measuring, every run checks the rule-only flags for 300 users (a row: a
measurement against a peer that answers something else is not a comparison).

    python bench/unleash.py [--duration 20] [--rounds 5] [--warmup 2] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template
from typing import NamedTuple

from benchutil import offline_files, pinned, stop
from ofrep_http import ENV, NEW_USERS, REPEATED, USERS, lua_script, realistic_document
from report import Row, at_least, at_most, finish, skip, table
from wrk import WrkRun, ensure_wrk, median, run_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "bench" / "unleash"  # package.json, package-lock.json, node_modules
PROXY = PEER / "node_modules" / "@unleash" / "proxy"
GOAL = 6.0  # x Unleash Proxy's req/s


# -- the toggles -------------------------------------------------------------------------------
# What an Unleash server accepts (its constraint schema): toggles a team could really hold.
OPERATORS = frozenset({
    "IN", "NOT_IN", "STR_ENDS_WITH", "STR_STARTS_WITH", "STR_CONTAINS", "NUM_EQ", "NUM_GT",
    "NUM_GTE", "NUM_LT", "NUM_LTE", "DATE_AFTER", "DATE_BEFORE", "SEMVER_EQ", "SEMVER_GT",
    "SEMVER_LT"})


def constraint(field: str, operator: str, *values: str, inverted: bool = False) -> dict:
    one = operator.startswith(("NUM_", "SEMVER_", "DATE_"))  # these take one value
    return {"contextName": field, "operator": operator,
            **({"value": values[0]} if one else {"values": list(values)}),
            "inverted": inverted, "caseInsensitive": False}


def version_at_least(version: str) -> dict:
    return constraint("appVersion", "SEMVER_LT", version, inverted=True)


PAID = constraint("plan", "IN", "pro", "enterprise", "team")
STAFF_EMAIL = constraint("email", "STR_ENDS_WITH", "@example.com")
STAFF_USER = constraint("userId", "IN", "user-1", "user-2", "user-3")
BETA = 1  # the segment standing for the ``beta`` evaluator
SEGMENTS = [{"id": BETA, "name": "beta", "constraints": [
    constraint("userId", "STR_STARTS_WITH", "user-1"), version_at_least("2.0.0")]}]


class When(NamedTuple):
    """One ``if`` branch: all constraints (and segments) hold -> ``variant`` (None: "on")."""
    constraints: tuple[dict, ...] = ()
    variant: str | None = None
    segments: tuple[int, ...] = ()


class Rollout(NamedTuple):
    """A boolean ``fractional`` [on p, off 100 - p] behind its constraints."""
    percent: int
    constraints: tuple[dict, ...] = ()


class Split(NamedTuple):
    """A non-boolean ``fractional`` (variant, weight) ... behind its constraints."""
    weights: tuple[tuple[str, int], ...]
    constraints: tuple[dict, ...] = ()


Rule = When | Rollout | Split


def internal(variant: str | None = None) -> list[Rule]:
    """The ``internal`` evaluator, an ``or``: one strategy per disjunct."""
    return [When((STAFF_EMAIL,), variant), When((STAFF_USER,), variant)]


def country(*codes: str) -> dict:
    return constraint("country", "IN", *codes)


def plan(*names: str) -> dict:
    return constraint("plan", "IN", *names)


RULES: dict[str, list[Rule]] = {
    "checkout-v2": [Rollout(50, (PAID, version_at_least("2.0.0")))],
    "new-onboarding": [*internal(), Rollout(20)],
    # flagd's "^" is "the same major version": 2.0.0 <= v < 3.0.0
    "dark-mode": [When((version_at_least("2.0.0"), constraint("appVersion", "SEMVER_LT", "3.0.0")))],
    "search-ranking": [*internal("ml"), Split((("ml", 10), ("classic", 90)))],
    "pricing-page": [Split((("a", 34), ("b", 33), ("c", 33)), (country("US"),)),
                     When((country("DE", "FR"),), "b"), When(variant="a")],
    "beta-banner": [When(segments=(BETA,))],
    "max-uploads": [When((plan("enterprise"),), "big"),
                    When((PAID, constraint("age", "NUM_GTE", "21")), "medium"),
                    When(variant="small")],
    "gdpr-consent-v2": [When((country("DE", "FR", "GB", "IE", "NL"),))],
    "mobile-nav": [When((constraint("appVersion", "STR_STARTS_WITH", "3."),
                         constraint("country", "NOT_IN", "XX")))],
    "support-chat": [When((plan("enterprise"),)), *internal(), Rollout(5)],
    "recommendations": [When((constraint("age", "NUM_GTE", "18"), version_at_least("1.4.0"),
                              PAID))],
    "api-rate-limit": [When((plan("free"),), "low"), When((plan("pro", "team"),), "mid"),
                       When(variant="high")],
    "promo-discount": [Split((("ten", 50), ("twenty", 50)),
                             (country("US", "GB"), constraint("age", "NUM_LT", "30"))),
                       When(variant="none")],
    "legacy-export": [When((constraint("appVersion", "SEMVER_LT", "1.2.0"),))],
    "staff-tools": internal(),
    "welcome-copy": [When((country("DE"),), "de"), When((country("FR"),), "fr"),
                     When(variant="en")],
    "perf-sampling": [Rollout(1)],
    "kill-payments-v3": [],  # DISABLED in flagd: a disabled toggle
    "kill-legacy-sync": [When()],
    "footer-links": [When(variant="v2")],
}

PINS = ("first", "last")  # --check: every fractional pinned to its first / last variant


def payload(value: object) -> dict:
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"type": "number", "value": json.dumps(value)}
    return {"type": "json", "value": json.dumps(value, separators=(",", ":"))}


def decoded(body: dict) -> object:
    return body["value"] if body["type"] == "string" else json.loads(body["value"])


def variant(name: str, value: object, weight: int, stickiness: str) -> dict:
    return {"name": name, "weight": weight, "weightType": "variable", "stickiness": stickiness,
            "payload": payload(value)}


def strategy(key: str, rule: Rule, values: dict, pin: str | None) -> dict:
    """One Unleash strategy for one branch of flag ``key`` (``values``: its flagd variants)."""
    base = {"constraints": list(rule.constraints), "segments": [], "variants": []}
    rollout = {"stickiness": "userId", "groupId": key}
    if isinstance(rule, Rollout):  # a pinned "off" (0 %) falls through, as its branch is last
        percent = {None: rule.percent, "first": 100, "last": 0}[pin]
        return {**base, "name": "flexibleRollout", "parameters": {**rollout,
                                                                  "rollout": str(percent)}}
    if isinstance(rule, Split):
        weights = rule.weights if pin is None else (rule.weights[0 if pin == "first" else -1],)
        total = sum(w for _, w in weights)
        variants = [variant(name, values[name], w * 1000 // total, "userId")
                    for name, w in weights]
        return {**base, "name": "flexibleRollout", "variants": variants,
                "parameters": {**rollout, "rollout": "100"}}
    chosen = [] if rule.variant is None else [
        variant(rule.variant, values[rule.variant], 1000, "default")]
    return {**base, "name": "default", "parameters": {}, "segments": list(rule.segments),
            "variants": chosen}


def unleash_features(document: dict, pin: str | None = None) -> dict:
    """What an Unleash server's client API (GET /api/client/features) would answer for the
    toggles standing for ``document``'s flags (its variants and states, ``RULES``' logic)."""
    features = [{"name": key, "type": "release", "project": "default", "stale": False,
                 "enabled": flag["state"] != "DISABLED", "impressionData": False, "variants": [],
                 "strategies": [strategy(key, rule, flag["variants"], pin)
                                for rule in RULES[key]]}
                for key, flag in document["flags"].items()]
    return {"version": 2, "features": features, "segments": SEGMENTS}


def pinned_document(document: dict, pin: str) -> dict:
    """``document`` with every ``fractional`` replaced by its first or last variant."""
    def walk(node: object) -> object:
        if isinstance(node, dict):
            if "fractional" in node:
                buckets = [b for b in node["fractional"] if isinstance(b, list)]
                return buckets[0 if pin == "first" else -1][0]
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    def pin_flag(flag: dict) -> dict:
        targeting = walk(flag.get("targeting"))
        if isinstance(targeting, str):  # the whole rule was a fractional: now a default
            return {k: v for k, v in flag.items() if k != "targeting"} | {
                "defaultVariant": targeting}
        return flag if targeting is None else {**flag, "targeting": targeting}

    return {**document, "flags": {key: pin_flag(flag) for key, flag in document["flags"].items()}}


def rule_only(document: dict) -> list[str]:
    """The flags whose answer no bucketing decides (no ``fractional`` anywhere)."""
    return [key for key, flag in document["flags"].items()
            if "fractional" not in json.dumps(flag.get("targeting", {}))]


def toggle_values(toggles: list[dict], features: dict) -> dict[str, object]:
    """Per flag, the value an Unleash answer (GET /proxy: the enabled toggles) stands for, in
    flagedge's terms: a payload's value, True / False for a boolean toggle on / off, None for
    a disabled toggle (flagedge: DISABLED, no value)."""
    on = {t["name"]: t["variant"] for t in toggles}
    values: dict[str, object] = {}
    for feature in features["features"]:
        key = feature["name"]
        if not feature["enabled"]:
            values[key] = None
        elif key not in on:
            values[key] = False
        else:
            values[key] = decoded(on[key]["payload"]) if on[key].get("payload") else True
    return values


# -- the users (ofrep_http's Lua script, as query parameters) ----------------------------------
PLANS = ("free", "pro", "enterprise", "team")
COUNTRIES = ("US", "DE", "FR", "GB", "XX")


def attributes(n: int) -> dict:
    """User ``n``'s attributes, as ofrep_http's LUA and ``UNLEASH_LUA`` make them."""
    return {"email": f"user{n}@{'example.com' if n % 10 == 0 else 'mail.test'}",
            "plan": PLANS[n % 4], "country": COUNTRIES[n % 5], "age": 13 + n % 70,
            "appVersion": f"{1 + n % 3}.{n % 5}.{n % 7}"}


UNLEASH_LUA = Template(r"""wrk.headers["Authorization"] = "$key"
local plans = {"free", "pro", "enterprise", "team"}
local countries = {"US", "DE", "FR", "GB", "XX"}
local new_users = $new_users
local users = $users
local counter = 0
local tid = 0
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args) math.randomseed(os.time() + tid * 7919) end
request = function()
  local n = math.random(1, users)
  local who = "user-" .. n
  counter = counter + 1
  if new_users then
    who = string.format("new-%d-%d", tid, counter)
  end
  local path = string.format(
    "/proxy?userId=%s&email=user%d%%40%s&plan=%s&country=%s&age=%d&appVersion=%d.%d.%d",
    who, n, (n % 10 == 0) and "example.com" or "mail.test", plans[n % 4 + 1],
    countries[n % 5 + 1], 13 + n % 70, 1 + n % 3, n % 5, n % 7)
  return wrk.format("GET", path)
end
""")


def unleash_lua(path: Path, workload: str, key: str) -> Path:
    path.write_text(UNLEASH_LUA.substitute(
        key=key, users=USERS, new_users="true" if workload == NEW_USERS else "false"))
    return path


# -- the peer: install, upstream, processes ----------------------------------------------------
def pinned_version() -> str:
    return json.loads((PEER / "package.json").read_text())["dependencies"]["@unleash/proxy"]


def installed_version() -> str | None:
    try:
        return json.loads((PROXY / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def node_binary() -> str | None:
    return shutil.which("node")


def ensure_unleash() -> str:
    """Installs the pinned Unleash Proxy when needed; returns why it cannot run ("" if it can)."""
    if installed_version() != pinned_version():
        npm = shutil.which("npm")
        if npm is None:
            return "npm not found: install Node.js (with npm) to measure against Unleash Proxy"
        print(f"installing Unleash Proxy {pinned_version()} (npm ci --prefix bench/unleash)...",
              flush=True)
        # --ignore-scripts: the one install script in the tree is a download counter.
        subprocess.run([npm, "ci", "--prefix", str(PEER), "--ignore-scripts", "--no-audit",
                        "--no-fund"], check=True)
    if node_binary() is None:
        return "node not found: install Node.js to measure against Unleash Proxy"
    return ""


def serve_upstream(folder: Path, port: int) -> None:  # pragma: no cover - its own process
    """The Unleash API the proxy syncs from: ``/<set>/api/client/features`` is folder/<set>.json."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            match = re.fullmatch(r"/(\w+)/api/client/features(\?.*)?", self.path)
            file = folder / f"{match.group(1)}.json" if match else None
            if file is None or not file.exists():
                return self.send_error(404)
            body = file.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                return self.end_headers()
            self.send_response(200)
            for name, value in (("Content-Type", "application/json"), ("ETag", etag),
                                ("Content-Length", str(len(body)))):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            return None

        def do_POST(self) -> None:  # register, metrics: taken and dropped
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            known = self.path.endswith(("/api/client/register", "/api/client/metrics"))
            self.send_response(202 if known else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Upstream).serve_forever()


class Server(NamedTuple):
    proc: subprocess.Popen
    port: int
    key: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Fleet:
    """The processes of one run (stopped and their folder removed by ``close``)."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="flagedge-bench-unleash-"))
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
        self.upstream_port = 0

    def spawn(self, cmd: list[str], log: str, **kw: object) -> subprocess.Popen:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - the process's log, kept with it
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
        self.procs.append(proc)
        return proc

    def upstream(self, sets: dict[str, dict]) -> None:
        from proxy.dev.devredis import free_port

        for name, features in sets.items():
            (self.tmp / f"{name}.json").write_text(json.dumps(features))
        self.upstream_port = free_port()
        proc = self.spawn(pinned(1, [sys.executable, __file__, "--upstream", str(self.tmp),
                                     "--port", str(self.upstream_port)]), "upstream.log",
                          env=self.env)
        wait_port(self.upstream_port, proc)

    def flagedge(self, name: str, document: dict) -> Server:
        from proxy.dev.devredis import free_port

        folder = self.tmp / f"flagedge-{name}"
        folder.mkdir()
        key = offline_files(folder, document, ENV)
        port = free_port()
        proc = self.spawn(pinned(0, [
            sys.executable, "-m", "proxy", "serve", "--flags", str(folder / "flags.json"),
            "--keys", str(folder / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port",
            str(port)]), f"flagedge-{name}.log", cwd=ROOT, env=self.env)
        return Server(proc, port, key)

    def unleash(self, name: str) -> Server:
        from proxy.dev.devredis import free_port

        home = self.tmp / f"unleash-{name}"  # its backup file lands in TMPDIR: one per proxy
        home.mkdir()
        port, key = free_port(), f"bench-client-key-{name}"
        env = {**self.env, "NODE_ENV": "production", "PORT": str(port), "TMPDIR": str(home),
               "UNLEASH_URL": f"http://127.0.0.1:{self.upstream_port}/{name}/api/",
               "UNLEASH_API_TOKEN": "bench-upstream-token", "UNLEASH_PROXY_CLIENT_KEYS": key,
               "UNLEASH_APP_NAME": "flagedge-bench"}
        proc = self.spawn(pinned(0, [node_binary() or "node", "dist/start.js"]),
                          f"unleash-{name}.log", cwd=PROXY, env=env)
        return Server(proc, port, key)

    def close(self) -> None:
        for proc in self.procs:
            stop(proc, timeout=15)
        shutil.rmtree(self.tmp, ignore_errors=True)


def ready(edge: Server, peer: Server, timeout: float = 30.0) -> None:
    """Both listening, and the proxy synchronised with its upstream (its health answers 200)."""
    import httpx

    wait_port(edge.port, edge.proc, timeout)
    wait_port(peer.port, peer.proc, timeout)
    deadline = time.monotonic() + timeout
    while httpx.get(f"{peer.base}/proxy/health", timeout=5).status_code != 200:
        if time.monotonic() > deadline or peer.proc.poll() is not None:
            raise TimeoutError("Unleash Proxy never synchronised with the bench's upstream")
        time.sleep(0.05)


# -- the translation, checked against both real servers ----------------------------------------
class Answers(NamedTuple):
    edge: dict[str, object]
    peer: dict[str, object]


User = tuple[str, dict]  # targetingKey / userId, the other attributes


def ask(edge: Server, peer: Server, features: dict, users: list[User]) -> list[Answers]:
    """Each user's answers from both servers, as values per flag."""
    import httpx

    out = []
    with httpx.Client(timeout=10) as client:
        for who, attrs in users:
            context = {"targetingKey": who, **attrs}
            bulk = client.post(f"{edge.base}/ofrep/v1/evaluate/flags", json={"context": context},
                               headers={"Authorization": f"Bearer {edge.key}"})
            toggles = client.get(f"{peer.base}/proxy", params={"userId": who, **attrs},
                                 headers={"Authorization": peer.key})
            bulk.raise_for_status()
            toggles.raise_for_status()
            out.append(Answers({f["key"]: f.get("value") for f in bulk.json()["flags"]},
                               toggle_values(toggles.json()["toggles"], features)))
    return out


def mismatches(answers: list[Answers], flags: list[str]) -> list[str]:
    return [f"{flag}: flagedge {a.edge.get(flag)!r}, Unleash {a.peer.get(flag)!r}"
            for a in answers for flag in flags if a.edge.get(flag) != a.peer.get(flag)]


def proportions_apart(answers: list[Answers], flags: list[str]) -> list[str]:
    """Flags whose values' shares differ between the servers by more than 5 sigma."""
    apart = []
    for flag in flags:
        seen = {json.dumps(a.edge[flag]) for a in answers} | {
            json.dumps(a.peer[flag]) for a in answers}
        for value in sorted(seen):
            edge = sum(json.dumps(a.edge[flag]) == value for a in answers)
            peer = sum(json.dumps(a.peer[flag]) == value for a in answers)
            n, p = len(answers), (edge + peer) / (2 * len(answers))
            if abs(edge - peer) / n > 5 * math.sqrt(2 * p * (1 - p) / n) + 2 / n:
                apart.append(f"{flag}={value}: flagedge {edge}/{n}, Unleash {peer}/{n}")
    return apart


def users(count: int, new: bool = False) -> list[User]:
    """The workload's users 1..count (``new``: each under a never-seen key)."""
    return [(f"new-check-{n}" if new else f"user-{n}", attributes(n)) for n in range(1, count + 1)]


# Each rule's edges, picked independently: in the workload one number makes all of a user's
# attributes, so some pairs (a "pro" plan at age 21) never meet there.
EDGES = {
    "who": ("user-1", "user-2", "user-3", "user-4", "user-10", "user-19", "user-123",
            "user-2000", "user-9999", "new-1-1", "xuser-1"),
    "email": ("a@example.com", "user7@mail.test", "a@example.com.evil", "a@EXAMPLE.com"),
    "plan": (*PLANS, "trial"),
    "country": (*COUNTRIES, "IE", "NL", "JP", "us"),
    "age": (13, 17, 18, 20, 21, 22, 29, 30, 31, 60, 61, 82),
    "appVersion": ("1.0.0", "1.1.9", "1.2.0", "1.3.9", "1.4.0", "1.10.0", "2.0.0", "2.0.1",
                   "2.1.0", "2.10.3", "2.99.99", "3.0.0", "3.1.4", "10.0.0", "30.1.0"),
}


def edge_users(count: int, seed: int = 21) -> list[User]:
    import random

    pick = random.Random(seed).choice
    return [(pick(EDGES["who"]), {k: pick(v) for k, v in EDGES.items() if k != "who"})
            for _ in range(count)]


def agreement_row(edge: Server, peer: Server, count: int = 300) -> Row:
    """The measured pair answers alike on the rule-only flags (the bucketing aside)."""
    document = realistic_document()
    flags = rule_only(document)
    wrong = mismatches(ask(edge, peer, unleash_features(document), users(count)), flags)
    for line in wrong[:5]:
        print("  mismatch:", line)
    return at_most(f"answers differ from flagedge's ({len(flags)} rule-only flags)", len(wrong),
                   0, f"{count} users x {len(flags)} flags compared", unit="")


EXACT = "1,000 workload users + 2,000 edge contexts"


def check() -> int:
    """The translation against both real servers (see the module's docstring)."""
    document = realistic_document()
    exact = users(1000) + edge_users(2000)
    fleet = Fleet()
    rows: list[Row] = []
    try:
        fleet.upstream({"live": unleash_features(document),
                        **{pin: unleash_features(document, pin) for pin in PINS}})
        for pin in PINS:
            edge, peer = fleet.flagedge(pin, pinned_document(document, pin)), fleet.unleash(pin)
            ready(edge, peer)
            wrong = mismatches(ask(edge, peer, unleash_features(document, pin), exact),
                               list(document["flags"]))
            print(f"fractionals pinned to their {pin} variant: {len(wrong)} mismatches",
                  *wrong[:10], sep="\n  ")
            rows.append(at_most(f"pinned {pin}: answers that differ (20 flags)", len(wrong), 0,
                                EXACT))
        edge, peer = fleet.flagedge("live", document), fleet.unleash("live")
        ready(edge, peer)
        features = unleash_features(document)
        wrong = mismatches(ask(edge, peer, features, exact), rule_only(document))
        rows.append(at_most("real rules: rule-only answers that differ", len(wrong), 0, EXACT))
        fractional = [k for k in document["flags"] if k not in rule_only(document)]
        apart = proportions_apart(ask(edge, peer, features, users(4000, new=True)), fractional)
        print(f"real rules, {len(fractional)} fractional flags: {len(apart)} shares apart",
              *apart, sep="\n  ")
        rows.append(at_most("real rules: fractional shares > 5 sigma apart", len(apart), 0,
                            "4,000 new users"))
    finally:
        fleet.close()
    print()
    print(table(rows))
    ok = all(r.passed for r in rows)
    print("the toggles answer as flagedge does" if ok else "TRANSLATION DIFFERS")
    return 0 if ok else 1


# -- the load ----------------------------------------------------------------------------------
WORKLOADS = (("repeated users", REPEATED), ("new users", NEW_USERS))


def measure(wrk: str, fleet: Fleet, edge: Server, peer: Server, workload: str,
            args: argparse.Namespace) -> dict[str, WrkRun]:
    """Alternating short rounds (the machine's speed drifts over seconds; noise then hits both
    alike); medians per server."""
    targets = {
        "flagedge": (f"{edge.base}/ofrep/v1/evaluate/flags",
                     lua_script(fleet.tmp / f"flagedge-{workload}.lua", workload, edge.key)),
        "unleash": (f"{peer.base}/proxy",
                    unleash_lua(fleet.tmp / f"unleash-{workload}.lua", workload, peer.key))}
    if args.warmup:
        for target in targets.values():
            run_wrk(wrk, *target, args.warmup, args.connections)
    runs: dict[str, list[WrkRun]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, target in targets.items():
            runs[name].append(run_wrk(wrk, *target, args.duration / args.rounds,
                                      args.connections))
    return {name: median(r) for name, r in runs.items()}


def rows_for(label: str, res: dict[str, WrkRun]) -> list[Row]:
    edge, peer = res["flagedge"], res["unleash"]
    seen = (f"flagedge {edge.rps:,.0f} req/s p99 {edge.p99_ms:.1f} ms; Unleash Proxy "
            f"{installed_version()} {peer.rps:,.0f} req/s p99 {peer.p99_ms:.1f} ms")
    rows = [at_least(f"{label}: flagedge / Unleash Proxy", edge.rps / peer.rps, GOAL, seen)]
    if edge.failed + peer.failed:
        rows.append(at_most(f"{label}: failed requests (non-2xx, socket errors)",
                            edge.failed + peer.failed, 0,
                            f"flagedge {edge.failed}, Unleash Proxy {peer.failed}"))
    return rows


def node_version() -> str:
    return subprocess.run([node_binary() or "node", "--version"], capture_output=True,
                          text=True).stdout.strip()


def skipped(why: str) -> int:
    print(f"Unleash Proxy rows skipped: {why}")
    rows = [skip(f"{label}: flagedge / Unleash Proxy", f">= {GOAL:g}x", why)
            for label, _ in WORKLOADS]
    return finish("unleash", rows, {"skipped": why})


def bench(args: argparse.Namespace) -> int:
    wrk = ensure_wrk()
    document = realistic_document()
    fleet = Fleet()
    try:
        fleet.upstream({"live": unleash_features(document)})
        edge, peer = fleet.flagedge("live", document), fleet.unleash("live")
        ready(edge, peer)
        rows = [agreement_row(edge, peer)]
        for label, workload in WORKLOADS:
            rows += rows_for(label, measure(wrk, fleet, edge, peer, workload, args))
    finally:
        fleet.close()
    print(f"\nflagedge bulk OFREP vs Unleash Proxy {installed_version()} (node "
          f"{node_version()}) GET /proxy, realistic rules (20 flags), {USERS} users, both "
          f"with their defaults, each alone on core 0, wrk -c{args.connections} on core 1, "
          f"{args.duration:.0f}s per server in {args.rounds} alternating rounds (medians), "
          f"warm-up {args.warmup:.0f}s")
    return finish("unleash", rows, {
        "unleash_proxy": installed_version(), "node": node_version(), "users": USERS,
        "duration": args.duration, "rounds": args.rounds, "warmup": args.warmup,
        "connections": args.connections})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load per server before measuring (the peer's JIT)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--check", action="store_true",
                        help="check the toggles against both real servers, no load")
    parser.add_argument("--upstream", type=Path, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream:
        serve_upstream(args.upstream, args.port)
        return 0
    why = ensure_unleash()
    if why and args.check:
        print(f"cannot check the toggles: {why}")
        return 1
    if why:
        return skipped(why)
    return check() if args.check else bench(args)


if __name__ == "__main__":
    sys.exit(main())
