"""The real flagd providers, each in a process of its own, driven over JSON lines.

Python: ``openfeature-provider-flagd`` pinned per version in its own venv under
``.cache/sync-providers/`` (its dependencies may conflict with flagedge's venv), created
once by :func:`python_provider` (pip install of the pinned version). JavaScript:
``@openfeature/flagd-provider`` pinned by the package.json + package-lock.json beside this
file, installed once with ``npm ci`` into a cache folder keyed by their hash.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import orjson

from tests.install_lock import atomic_install, install_lock
from tests.waiting import wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CACHE = ROOT / ".cache" / "sync-providers"
PY_DRIVER = HERE / "flagd_py_driver.py"
JS_DRIVER = HERE / "flagd_js_driver.mjs"
NPM_FILES = ("package.json", "package-lock.json")


class ProviderUnavailable(RuntimeError):
    """The pinned provider could not be installed."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise ProviderUnavailable(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def python_provider(version: str) -> Path:
    """The python of a venv holding ``openfeature-provider-flagd==version`` (and whatever
    pip resolves for it), created the first time."""
    # Built where it lives (a venv holds absolute paths), marked complete only at the end.
    target = CACHE / f"flagd-py-{version}"
    with install_lock(f"flagd-py-{version}"):
        _build_python_provider(target, version)
    return target / "bin" / "python"


def _build_python_provider(target: Path, version: str) -> None:
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(target)])
        _run([str(target / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", f"openfeature-provider-flagd=={version}"])
        (target / ".complete").write_text("ok\n")


def js_provider() -> Path:
    """A folder whose node_modules hold the pinned JS provider (npm ci, once)."""
    digest = hashlib.sha256(b"".join((HERE / n).read_bytes() for n in NPM_FILES)).hexdigest()
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ProviderUnavailable("node and npm are needed for the JS provider tests")

    def build(work: Path) -> None:
        for name in NPM_FILES:
            shutil.copy2(HERE / name, work / name)
        _run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
             cwd=work)

    return atomic_install(CACHE / f"flagd-js-{digest[:16]}", build, "flagd-js")


class ProviderProcess:
    """One provider driver process: its events and log lines as they come, evaluations on
    request. Every wait has a deadline."""

    def __init__(self, cmd: list[str], log_path: Path, cwd: Path | None = None):
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log)
        self.events: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self._replies: dict[int, Any] = {}
        self._next = 0
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,),
                                        daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            if not line.strip():
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            with self._cond:
                if "id" in msg:
                    self._replies[msg["id"]] = msg["results"]
                elif msg.get("event") == "log":
                    self.logs.append(msg["message"])
                else:
                    self.events.append(msg)
                self._cond.notify_all()

    def names(self) -> list[str]:
        with self._cond:
            return [e["event"] for e in self.events]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def wait_event(self, name: str, count: int = 1, timeout: float = 20.0) -> None:
        wait_until(lambda: self._alive() and self.count(name) >= count, timeout=timeout,
                   what=f"{count} x {name} from the provider (seen {self.names()})")

    def wait_log(self, fragment: str, timeout: float = 20.0) -> str:
        def found() -> str | None:
            self._alive()
            with self._cond:
                return next((m for m in self.logs if fragment in m), None)
        return wait_until(found, timeout=timeout, what=f"provider log line with {fragment!r}")

    def evaluate(self, items: list[dict[str, Any]], timeout: float = 120.0) -> list[Any]:
        with self._cond:
            ident = self._next
            self._next += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"id": ident, "evals": items}) + b"\n")
        self.proc.stdin.flush()
        wait_until(lambda: self._alive() and ident in self._replies, timeout=timeout,
                   interval=0.005, what="the provider's evaluations")
        with self._cond:
            return self._replies.pop(ident)

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"provider driver exited {self.proc.returncode}:\n"
                               f"{self.log_path.read_text(errors='replace')[-3000:]}")
        return True

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
