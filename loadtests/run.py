"""`make loadtest`: a throwaway local stack (its own redis-server, the demo flags pushed with
the CLI, a client and a server key, `flagedge serve` on a free port), then Locust headless
for a set time. Locust's CSV and HTML report land in ``loadtests/report/``.

    python loadtests/run.py [--users 40] [--spawn-rate 10] [--time 60s] [--workers 1]
                            [--] [extra locust arguments, e.g. --config-users '{...}']
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.dev.devredis import free_port, start_redis  # noqa: E402

ENV = "loadtest"
REPORT = ROOT / "loadtests" / "report"


def flagedge(*args: str, url: str) -> str:
    done = subprocess.run([sys.executable, "-m", "proxy", *args, "--redis", url],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"flagedge {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("flagedge serve exited early (see loadtests/report/proxy.log)")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("flagedge serve not ready in time")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", 40)))
    p.add_argument("--spawn-rate", type=float, default=10.0)
    p.add_argument("--time", default=os.environ.get("LOADTEST_TIME", "60s"))
    p.add_argument("--workers", type=int, default=1, help="flagedge serve --workers")
    p.add_argument("locust_args", nargs="*", help="passed to locust as they are")
    args = p.parse_args(argv)

    REPORT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="flagedge-loadtest-"))
    redis_proc, redis_port = start_redis(workdir)
    url = f"redis://127.0.0.1:{redis_port}/0"
    proxy: subprocess.Popen[bytes] | None = None
    try:
        flagedge("push", str(ROOT / "config" / "flags.json"), "--env", ENV,
                 "--message", "loadtest demo flags", url=url)
        keys = {kind: json.loads(flagedge("keys", "create", "--env", ENV, "--kind", kind,
                                          "--name", f"loadtest-{kind}", "--json", url=url))["key"]
                for kind in ("client", "server")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with (REPORT / "proxy.log").open("wb") as log:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--redis", url, "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(args.workers), "--no-access-log"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(base, proxy)
        print(f"flagedge on {base} (redis {url}, env {ENV}); locust for {args.time} "
              f"with {args.users} users", flush=True)
        env = {**os.environ, "LOCUST_CLIENT_KEY": keys["client"],
               "LOCUST_SERVER_KEY": keys["server"], "LOCUST_FLAGEDGE_ENV": ENV,
               "LOCUST_REDIS_URL": url}
        locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
        cmd = [locust, "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
               "-H", base, "-u", str(args.users), "-r", str(args.spawn_rate),
               "-t", args.time, "--only-summary",
               "--csv", str(REPORT / "flagedge"), "--html", str(REPORT / "flagedge.html"),
               *args.locust_args]
        code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
        print(f"\nreport: {REPORT / 'flagedge.html'} and {REPORT}/flagedge_*.csv")
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        stop(proxy)
        stop(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
