"""Load from wrk (Debian package), pinned to a core: the HTTP benches' one way to drive a
server and read its report. A run that lost requests (non-2xx answers, socket errors,
timeouts) says so, so that no throughput figure hides them."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from benchutil import pinned


class WrkRun(NamedTuple):
    rps: float
    p99_ms: float
    failed: int  # non-2xx/3xx answers + socket errors


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing the Debian package (apt-get install wrk)...", flush=True)
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
    subprocess.run([*apt, "update", "-qq"], check=False)
    subprocess.run([*apt, "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def find_wrk() -> str | None:
    """ensure_wrk(), or None when wrk is missing and cannot be installed: the bench then
    reports itself skipped (report.skipped), never passed."""
    try:
        return ensure_wrk()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"wrk could not be installed: {exc}", flush=True)
        return None


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def run_wrk(wrk: str, url: str, script: Path, duration: float, connections: int,
            core: int = 1) -> WrkRun:
    out = subprocess.run(
        pinned(core, [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                      "--latency", "-s", str(script), url]),
        capture_output=True, text=True, check=True).stdout
    return parse(out)


def parse(out: str) -> WrkRun:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99_text.group(2)]
    return WrkRun(rps, float(p99_text.group(1)) * scale, failures(out))


def failures(wrk_output: str) -> int:
    """Requests that did not succeed: non-2xx/3xx answers, and socket errors (connect, read,
    write, timeout), which wrk reports apart and a throughput figure would otherwise hide."""
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk_output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       wrk_output)
    return (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(n) for n in errors.groups()) if errors else 0)


def median(runs: list[WrkRun]) -> WrkRun:
    """Medians of rps and p99 over alternating rounds; failures summed (any one counts)."""
    mid = len(runs) // 2
    return WrkRun(sorted(r.rps for r in runs)[mid], sorted(r.p99_ms for r in runs)[mid],
                  sum(r.failed for r in runs))
