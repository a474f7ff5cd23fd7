"""`make run`: a local redis-server of its own, the demo flags pushed to env ``dev``, a demo
client key, and the proxy on :8080 (CORS ``*``). Ctrl-C stops both.

Usage: ``python -m proxy.dev.devrun [--port 8080] [--flags config/flags.json]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from proxy.dev.devredis import start_redis

ROOT = Path(__file__).resolve().parent.parent
ENV = "dev"


def _flagedge(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], env=env, text=True,
                          capture_output=True, check=False)


def _fail(what: str, result: subprocess.CompletedProcess[str]) -> int:
    print(f"make run: {what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.dev.devrun", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLAGEDGE_PORT", 8080)))
    parser.add_argument("--flags", type=Path, default=ROOT / "config" / "flags.json")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="flagedge-dev-"))
    proc, port = start_redis(workdir)
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "FLAGEDGE_REDIS_URL": url}
    try:
        pushed = _flagedge(["push", str(args.flags), "--env", ENV, "--redis", url,
                            "--message", "make run demo flags"], env)
        if pushed.returncode != 0:
            return _fail(f"pushing {args.flags}", pushed)
        created = _flagedge(["keys", "create", "--env", ENV, "--kind", "client", "--name",
                             "make-run-demo", "--redis", url], env)
        found = re.search(r"fe_client_[A-Za-z0-9_\-]+", created.stdout)
        if created.returncode != 0 or not found:
            return _fail("creating a demo client key", created)
        key = found.group(0)
        base = f"http://localhost:{args.port}"
        demo_note = ("" if (ROOT / "examples" / "web" / "dist" / "app.js").exists() else
                     "\n            (build it first: cd examples/web && npm ci && npm run build)")
        print(f"""
flagedge dev server
  redis     {url}  (its own redis-server, pid {proc.pid}; stops with this command)
  env       {ENV}  (flags from {args.flags})
  client key {key}

  curl -s -X POST {base}/ofrep/v1/evaluate/flags \\
       -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"context": {{"targetingKey": "user-1"}}}}'

  readiness {base}/readyz    metrics {base}/metrics    API {base}/openapi.json
  demo page {base}/demo/?key={key}&user=user-1{demo_note}
Ctrl-C stops the proxy and redis.
""", flush=True)
        from proxy.cli import main as cli_main

        return cli_main(["serve", "--redis", url, "--env", ENV, "--port", str(args.port),
                         "--cors-origins", "*", "--demo"])
    except KeyboardInterrupt:
        return 130
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
