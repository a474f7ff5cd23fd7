"""`make run`: a local redis-server of its own, the demo flags pushed to env ``dev``, a demo
client key, and the proxy on :8080 (CORS ``*``). Ctrl-C stops both.

Usage: ``python -m proxy.dev.devrun [--port 8080] [--flags config/flags.json]``

Every step is a ``python -m proxy ...`` child process, the proxy included (``serve``), never
an import of the CLI: stopping this command by any signal it can catch (Ctrl-C, SIGTERM,
SIGHUP) stops the proxy first, then the redis-server, and removes the working directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from proxy.dev.devredis import start_redis

ROOT = Path(__file__).resolve().parents[2]  # the repository: proxy/dev/devrun.py
ENV = "dev"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The proxy's own graceful shutdown (serve's graceful_timeout, 10 s) and some margin.
SERVE_STOP_TIMEOUT_S = 15.0
REDIS_STOP_TIMEOUT_S = 10.0


def _flagedge(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], env=env, text=True,
                          capture_output=True, check=False)


def _fail(what: str, result: subprocess.CompletedProcess[str]) -> int:
    print(f"make run: {what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}",
          file=sys.stderr)
    return 1


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Supervisor:
    """Holds the proxy child and the first stop signal. A signal before the proxy runs skips
    the steps left; one after is forwarded to the proxy, and this command returns when the
    proxy has stopped."""

    def __init__(self) -> None:
        self.serve: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None
        self._forwarded = False

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        if self.serve is not None:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        # uvicorn stops gracefully on SIGINT and SIGTERM (a second SIGINT forces it); it has
        # no SIGHUP handler and would die on the spot, so a hang-up becomes SIGTERM.
        self._forwarded = True
        assert self.serve is not None
        self.serve.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Start the proxy unless a stop signal came first. Its own session: a terminal's
        Ctrl-C reaches this process only, which forwards it once."""
        if self.stop_signal is not None:
            return None
        self.serve = subprocess.Popen(command, env=env, start_new_session=True)
        if self.stop_signal is not None and not self._forwarded:  # came while it started
            self._forward(self.stop_signal)
        return self.serve

    def exit_code(self, returncode: int = 0) -> int:
        """128 + the signal that stopped us (130 for Ctrl-C), else the proxy's exit code."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 128 - returncode if returncode < 0 else returncode

    def stop(self) -> None:
        if self.serve is not None:
            _stop(self.serve, SERVE_STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.dev.devrun", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLAGEDGE_PORT", 8080)))
    parser.add_argument("--flags", type=Path, default=ROOT / "config" / "flags.json")
    parser.add_argument("--sync-port", type=int,
                        default=int(os.environ.get("FLAGEDGE_SYNC_PORT", 8015)),
                        help="flagd sync (gRPC) port for flagd's in-process providers")
    args = parser.parse_args(argv)

    supervisor = Supervisor()
    previous = {sig: signal.signal(sig, supervisor.on_signal) for sig in STOP_SIGNALS}
    workdir = Path(tempfile.mkdtemp(prefix="flagedge-dev-"))
    redis: subprocess.Popen[bytes] | None = None
    try:
        redis, redis_port = start_redis(workdir)
        return _run(args, supervisor, redis.pid, redis_port)
    finally:
        supervisor.stop()  # the proxy first: it follows Redis until it stops
        if redis is not None:
            _stop(redis, REDIS_STOP_TIMEOUT_S)
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, supervisor: Supervisor, redis_pid: int,
         redis_port: int) -> int:
    """Seed Redis (demo flags; a client, a server and an admin key), print how to call the
    proxy and where the UI is, run it."""
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = {**os.environ, "FLAGEDGE_REDIS_URL": url}
    pushed = _flagedge(["push", str(args.flags), "--env", ENV, "--redis", url,
                        "--message", "make run demo flags"], env)
    if supervisor.stop_signal is not None:  # a Ctrl-C also reaches (and fails) the step
        return supervisor.exit_code()
    if pushed.returncode != 0:
        return _fail(f"pushing {args.flags}", pushed)
    keys = {}
    for kind, name in (("client", "make-run-demo"), ("server", "make-run-flagd-sync"),
                       ("admin", "make-run-admin")):  # an admin key holds every role
        created = _flagedge(["keys", "create", "--env", ENV, "--kind", kind, "--name", name,
                             "--redis", url], env)
        if supervisor.stop_signal is not None:  # a Ctrl-C also reaches (and fails) the step
            return supervisor.exit_code()
        found = re.search(rf"fe_{kind}_[A-Za-z0-9_\-]+", created.stdout)
        if created.returncode != 0 or not found:
            return _fail(f"creating a {kind} key", created)
        keys[kind] = found.group(0)
    print(_banner(args, url, redis_pid, keys), flush=True)
    serve = supervisor.start([sys.executable, "-m", "proxy", "serve", "--redis", url,
                              "--env", ENV, "--port", str(args.port), "--cors-origins", "*",
                              "--sync-port", str(args.sync_port), "--demo"], env)
    if serve is None:
        return supervisor.exit_code()
    return supervisor.exit_code(serve.wait())


def _banner(args: argparse.Namespace, url: str, redis_pid: int, keys: dict[str, str]) -> str:
    base = f"http://localhost:{args.port}"
    api_key, server_key, admin_key = keys["client"], keys["server"], keys["admin"]
    demo_note = ("" if (ROOT / "examples" / "web" / "dist" / "app.js").exists() else
                 "\n            (build it first: cd examples/web && npm ci && npm run build)")
    return f"""
flagedge dev server
  redis     {url}  (its own redis-server, pid {redis_pid}; stops with this command)
  env       {ENV}  (flags from {args.flags})
  client key {api_key}

  curl -s -X POST {base}/ofrep/v1/evaluate/flags \\
       -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
       -d '{{"context": {{"targetingKey": "user-1"}}}}'

  readiness {base}/readyz    metrics {base}/metrics    API {base}/openapi.json
  demo page {base}/demo/?key={api_key}&user=user-1{demo_note}
  UI        {base}/ui/  (sign in with the admin key; it holds every role)
  admin key {admin_key}
  flagd sync localhost:{args.sync_port} (gRPC; flagd in-process providers, e.g.
            FLAGD_RESOLVER=in-process FLAGD_PORT={args.sync_port} FLAGD_PROVIDER_ID={server_key})
Ctrl-C stops the proxy and redis.
"""


if __name__ == "__main__":
    sys.exit(main())
