"""Prepare the browser tests: Debian's Chromium, the demo page's npm packages, its bundle.

Run as ``python -m tests.e2e.setup_browser`` (``make e2e`` does) or let the e2e fixtures call
``ensure_all()``. Every step is skipped when already done, so a warm run costs milliseconds:

- ``/usr/bin/chromium`` from Debian (``apt-get update`` + ``apt-get install chromium``) when
  missing. Playwright drives it as ``executable_path``; its own browser download
  (``playwright install``) is never used.
- ``npm ci`` of ``examples/web/package-lock.json`` into ``.cache/web-demo/`` (outside the
  source tree; keyed by the lock file's hash so a changed lock reinstalls).
- esbuild bundles ``examples/web/src/main.js`` into ``examples/web/dist/app.js`` (gitignored
  build output) when any source is newer than the bundle.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.install_lock import install_lock

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "examples" / "web"
DIST_DIR = WEB_DIR / "dist"
BUNDLE = DIST_DIR / "app.js"
NPM_CACHE_DIR = ROOT / ".cache" / "web-demo"
CHROMIUM = Path("/usr/bin/chromium")

log = logging.getLogger("flagedge.e2e.setup")


class SetupError(RuntimeError):
    """A setup step failed; the message says which and how to do it by hand."""


def _run(cmd: list[str], what: str, **kwargs) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise SetupError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        raise SetupError(f"{CHROMIUM} is missing and there is no apt-get to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*sudo, apt, "update", "-q"], "apt-get update", env=env)
    _run([*sudo, apt, "install", "-y", "-q", "chromium"],
         "apt-get install chromium", env=env)
    if not CHROMIUM.exists():
        raise SetupError(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((WEB_DIR / name).read_bytes())
    return h.hexdigest()


def ensure_node_modules() -> Path:
    """``npm ci`` into the cache folder; reinstalls only when package(-lock).json changed."""
    modules = NPM_CACHE_DIR / "node_modules"
    stamp = NPM_CACHE_DIR / ".lock-sha256"
    digest = _lock_digest()
    if modules.is_dir() and stamp.exists() and stamp.read_text() == digest:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("npm is not installed (Debian: apt-get install nodejs npm)")
    NPM_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(WEB_DIR / name, NPM_CACHE_DIR / name)
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], "npm ci",
         cwd=NPM_CACHE_DIR)
    stamp.write_text(digest)
    return modules


def _newest_source_mtime() -> float:
    files = [*WEB_DIR.joinpath("src").rglob("*.js"), WEB_DIR / "package-lock.json"]
    return max(f.stat().st_mtime for f in files)


def ensure_bundle(force: bool = False) -> Path:
    modules = ensure_node_modules()
    if not force and BUNDLE.exists() and BUNDLE.stat().st_mtime >= _newest_source_mtime():
        return BUNDLE
    esbuild = modules / ".bin" / "esbuild"
    DIST_DIR.mkdir(parents=True, exist_ok=True)
    # NODE_PATH lets esbuild resolve the packages from the cache folder, not the source tree.
    _run([str(esbuild), str(WEB_DIR / "src" / "main.js"), "--bundle", "--format=iife",
          "--target=es2020", "--minify", "--sourcemap", "--log-level=warning",
          f"--outfile={BUNDLE}"], "esbuild", env={**os.environ, "NODE_PATH": str(modules)})
    return BUNDLE


def ensure_all() -> dict[str, Path]:
    with install_lock("e2e-setup"):
        return {"chromium": ensure_chromium(), "bundle": ensure_bundle()}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    force = "--force" in (argv if argv is not None else sys.argv[1:])
    try:
        ensure_chromium()
        bundle = ensure_bundle(force=force)
    except SetupError as exc:
        print(f"e2e setup: {exc}", file=sys.stderr)
        return 1
    print(f"e2e setup: chromium {CHROMIUM}, bundle {bundle} ({bundle.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
