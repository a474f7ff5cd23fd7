"""Worst-case RSS of one `flagedge serve` worker under adversarial contexts (issue 20).

One worker with default settings serves 350 flags (static, `in`/`ends_with` targeting,
`sem_ver`, fractional splits, nested `and`/`or`). After a warm-up with ordinary contexts
(2,000 users: the result cache and the serialised results fill as in production) its RSS is
the baseline. Then an adversary (wrk, Lua) sends for ``--duration`` seconds, in turn:

- bulk requests with a unique context padded to just under the result cache's 4 KB context
  limit (every one is cached, and its fractional flags give it a body of its own);
- the same context again, bytes reordered (a canonical hit: it becomes a raw-body alias);
- bulk requests with a unique ~60 KB ``appVersion`` (every ``sem_ver`` flag parses it);
- single-flag requests for a ``sem_ver`` flag with a unique ~60 KB ``appVersion``.

RSS is sampled every 0.2 s (psutil). Prints baseline, peak and final RSS and the cache bytes
gauges (when the checkout has them); goal: the peak stays below ``--goal-mb`` (300); exit 1
when missed.

    python bench/memory.py [--duration 45] [--checkout /path/to/other/checkout]

``--checkout`` serves another checkout's code with this script's load (a before/after).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/memory.py` from a checkout
sys.path.insert(0, str(ROOT / "bench"))

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import psutil  # noqa: E402
from benchutil import offline_files, pinned, stop  # noqa: E402
from report import at_least, at_most, finish, skipped  # noqa: E402
from wrk import find_wrk  # noqa: E402

from proxy.dev.devredis import free_port  # noqa: E402

ENV = "bench"
N_FLAGS = 350
SEMVER_FLAG = "semver-0"
MB = 1024 * 1024


# -- the flag set ---------------------------------------------------------------------------
def flag_document(n: int = N_FLAGS, seed: int = 20) -> dict[str, Any]:
    """``n`` flags shaped like a product's: copy strings and small config objects as values,
    a third of them targeted, a fifth split by fraction."""
    rnd = random.Random(seed)
    words = ("checkout", "banner", "search", "pricing", "onboarding", "cart", "profile",
             "billing", "mobile", "export", "dashboard", "editor", "sharing", "alerts")

    def value(kind: str, i: int, v: int) -> Any:
        if kind == "boolean":
            return v == 0
        if kind == "string":
            return f"{rnd.choice(words).title()} copy, variant {v}: " + "lorem ipsum " * rnd.randint(1, 4)
        if kind == "number":
            return rnd.choice((10, 25, 100, 2.5, 0.75)) * (v + 1)
        return {"limit": 10 * (v + 1), "mode": rnd.choice(("fast", "safe", "batch")),
                "color": f"#{rnd.randrange(16**6):06x}", "items": [f"{w}-{i}" for w in words[:v + 2]]}

    flags: dict[str, Any] = {}
    for i in range(n):
        kind = ("boolean", "string", "number", "object")[i % 4]
        names = ("on", "off") if kind == "boolean" else ("a", "b", "c")[: 2 + i % 2]
        variants = {name: value(kind, i, v) for v, name in enumerate(names)}
        first, second = names[0], names[1]
        shape = i % 10
        flag: dict[str, Any] = {"state": "ENABLED", "variants": variants, "defaultVariant": second}
        if shape == 0:
            flag["targeting"] = {"if": [{"sem_ver": [{"var": "appVersion"}, ">=",
                                                     f"{1 + i % 3}.{i % 7}.0"]}, first, second]}
        elif shape == 1:
            flag["targeting"] = {"if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, first,
                                        None]}
        elif shape == 2:
            flag["targeting"] = {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, first,
                                        None]}
        elif shape in (3, 4):
            flag["targeting"] = {"fractional": [[name, rnd.randint(1, 9)] for name in names]}
        elif shape == 5:
            flag["targeting"] = {"if": [{"and": [{">=": [{"var": "age"}, 18 + i % 20]},
                                                 {"!=": [{"var": "country"}, "XX"]}]},
                                        first, second]}
        elif shape == 6:
            flag["targeting"] = {"if": [{"or": [{"==": [{"var": "country"}, "DE"]},
                                                {"in": [{"var": "plan"}, ["team"]]}]},
                                        {"fractional": [[first, 50], [second, 50]]}, None]}
        # shapes 7-9: static
        flags[f"{rnd.choice(words)}-{i}" if i else SEMVER_FLAG] = flag
    flags[SEMVER_FLAG] = {"state": "ENABLED", "variants": {"new": True, "old": False},
                          "defaultVariant": "old", "targeting": {
                              "if": [{"sem_ver": [{"var": "appVersion"}, "^", "2.0.0"]}, "new",
                                     "old"]}}
    assert len(flags) == n
    return {"flags": flags, "metadata": {"team": "bench", "set": "memory"}}


# -- load -------------------------------------------------------------------------------------
_ORDINARY = r"""
local plans = {"free", "pro", "enterprise", "team"}
local countries = {"US", "DE", "FR", "GB", "XX"}
init = function(args) math.randomseed(os.time()) end
request = function()
  local n = math.random(1, 2000)
  local body = string.format(
    '{"context":{"targetingKey":"user-%d","email":"user%d@%s","plan":"%s","country":"%s",' ..
    '"age":%d,"appVersion":"%d.%d.%d"}}',
    n, n, (n % 10 == 0) and "example.com" or "mail.test", plans[n % 4 + 1],
    countries[n % 5 + 1], 13 + n % 70, 1 + n % 3, n % 5, n % 7)
  if n % 5 == 0 then
    return wrk.format("POST", "/ofrep/v1/evaluate/flags/SEMVER", nil, body)
  end
  return wrk.format("POST", "/ofrep/v1/evaluate/flags", nil, body)
end
"""

# Unique per request: the counter, and the start time (a second wrk run never repeats one).
_ADVERSARY = r"""
local counter = 0
local stamp = tostring(os.time())
local pad = string.rep("x", 3700)
local long = string.rep("7", 60000)
local last = ""
request = function()
  counter = counter + 1
  local kind = counter % 4
  local id = stamp .. "-" .. counter
  if kind == 0 then
    last = id
    local body = '{"context":{"targetingKey":"adv-' .. id .. '","plan":"pro","country":"DE",' ..
      '"email":"' .. id .. '@example.com","age":30,"appVersion":"2.1.0","note":"' .. pad .. '"}}'
    return wrk.format("POST", "/ofrep/v1/evaluate/flags", nil, body)
  elseif kind == 1 then
    -- the context of the request before, keys in another order: a canonical hit, so an alias
    local body = '{"context":{"note":"' .. pad .. '","appVersion":"2.1.0","age":30,' ..
      '"email":"' .. last .. '@example.com","country":"DE","plan":"pro","targetingKey":"adv-' ..
      last .. '"}}'
    return wrk.format("POST", "/ofrep/v1/evaluate/flags", nil, body)
  elseif kind == 2 then
    local body = '{"context":{"targetingKey":"big-' .. id .. '","appVersion":"' .. id .. long ..
      '"}}'
    return wrk.format("POST", "/ofrep/v1/evaluate/flags", nil, body)
  end
  local body = '{"context":{"targetingKey":"one-' .. id .. '","appVersion":"v' .. id .. long ..
    '"}}'
  return wrk.format("POST", "/ofrep/v1/evaluate/flags/SEMVER", nil, body)
end
"""


def lua_script(path: Path, text: str, key: str) -> Path:
    headers = ('wrk.headers["Content-Type"] = "application/json"\n'
               f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    path.write_text(headers + text.replace("SEMVER", SEMVER_FLAG))
    return path


def run_wrk(script: Path, url: str, seconds: float, connections: int, wrk: str = "wrk"
            ) -> dict[str, int]:
    out = subprocess.run(
        pinned(1, [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s",
                   str(script), url]),
        capture_output=True, text=True, check=True).stdout
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests": int(total.group(1)) if total else 0,
            "non2xx": int(bad.group(1)) if bad else 0}


# -- measurement ------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Peak RSS of a process (and any children) while running."""

    def __init__(self, pid: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.period = period
        self.peak = 0
        self._done = threading.Event()

    def rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.rss())
            self._done.wait(self.period)

    def finish(self) -> int:
        self._done.set()
        self.join()
        self.peak = max(self.peak, self.rss())
        return self.peak


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flagedge serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("flagedge serve not ready")


def cache_gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^flagedge_cache_bytes\{cache="([^"]+)"\} (\S+)$', text, re.M)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=45.0, help="adversary seconds")
    parser.add_argument("--warmup", type=float, default=8.0, help="ordinary traffic seconds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--goal-mb", type=float, default=300.0)
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="serve this checkout's code (default: this one)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    wrk = find_wrk()
    if wrk is None:
        return skipped("memory", "wrk is missing and could not be installed")

    tmp = Path(tempfile.mkdtemp(prefix="flagedge-memory-"))
    key = offline_files(tmp, flag_document(), ENV)
    ordinary = lua_script(tmp / "ordinary.lua", _ORDINARY, key)
    adversary = lua_script(tmp / "adversary.lua", _ADVERSARY, key)

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    env["PYTHONPATH"] = str(checkout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    edge = subprocess.Popen(pinned(0, [
        sys.executable, "-m", "proxy", "serve", "--flags", str(tmp / "flags.json"), "--keys",
        str(tmp / "keys.json"), "--env", ENV, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning"]), cwd=checkout, env=env)
    try:
        wait_ready(url, edge)
        probe = httpx.post(url + "/ofrep/v1/evaluate/flags", json={"context": {}},
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
        probe.raise_for_status()
        body_kb = len(probe.content) / 1024
        warm = run_wrk(ordinary, url, args.warmup, args.connections, wrk)
        sampler = RssSampler(edge.pid)
        baseline = sampler.rss()
        sampler.start()
        attack = run_wrk(adversary, url, args.duration, args.connections, wrk)
        peak = sampler.finish()
        final = sampler.rss()
        gauges = cache_gauges(url)
    finally:
        stop(edge, timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\none worker, default settings, {N_FLAGS} flags (bulk body {body_kb:.1f} KB), "
          f"checkout {checkout}")
    print(f"warm-up: {warm['requests']} ordinary requests in {args.warmup:.0f}s "
          f"({warm['non2xx']} non-2xx)")
    print(f"adversary: {attack['requests']} requests in {args.duration:.0f}s "
          f"({attack['non2xx']} non-2xx): 4 KB unique contexts, their aliases, 60 KB appVersions")
    print(f"RSS baseline {baseline / MB:7.1f} MB")
    print(f"RSS peak     {peak / MB:7.1f} MB  (+{(peak - baseline) / MB:.1f} MB, "
          f"{peak / baseline:.2f}x the baseline)")
    print(f"RSS final    {final / MB:7.1f} MB")
    for name, value in sorted(gauges.items()):
        print(f"  flagedge_cache_bytes{{cache={name!r}}} {value / MB:.1f} MB")
    rows = [at_most("peak RSS under adversarial traffic", peak / MB, args.goal_mb,
                    f"{baseline / MB:.0f} MB after the warm-up, {final / MB:.0f} MB at the end",
                    unit=" MB"),
            at_least("adversarial requests answered", attack["requests"], 1,
                     f"{attack['non2xx']} of them non-2xx", unit="")]
    details = {"duration": args.duration, "warmup": args.warmup, "checkout": str(checkout),
               "flags": N_FLAGS, "requests": {"warmup": warm, "adversary": attack},
               "rss_mb": {"baseline": round(baseline / MB, 1), "peak": round(peak / MB, 1),
                          "final": round(final / MB, 1)},
               "cache_bytes": gauges}
    return finish("memory", rows, details)


if __name__ == "__main__":
    sys.exit(main())
