"""Locust smoke: the load test's four user classes run headless for a few seconds against a
real `flagedge serve` and the test redis-server, with zero failures and requests from each."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"

# Locust statistics entry names, per user class that produces them.
ENTRIES = {
    "BrowserUser": ("bulk evaluate", "bulk evaluate (new visitor)", "bulk evaluate (refetch)",
                    "events stream (connect)"),
    "ServiceUser": ("single evaluate",),
    "StreamUser": ("rules stream (connect)", "propagation rules"),
    "ChangeUser": ("push change",),
}


@pytest.mark.integration
def test_locust_headless_smoke(proxy_server, tmp_path):
    proxy_server.push((ROOT / "config" / "flags.json").read_bytes())
    client = proxy_server.create_key("client")
    server = proxy_server.create_key("server")
    prefix = tmp_path / "smoke"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "FLAGEDGE_"))}
    env.update(LOCUST_CLIENT_KEY=client, LOCUST_SERVER_KEY=server,
               LOCUST_FLAGEDGE_ENV=proxy_server.env, LOCUST_REDIS_URL=proxy_server.redis.url)
    # Fast changes so several reach the stream within the short run.
    config = json.dumps([{"user_class_name": "ChangeUser", "change_interval": 0.5},
                         {"user_class_name": "BrowserUser", "pause": [0.2, 0.5]}])
    done = subprocess.run(
        [str(LOCUST), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
         "-H", proxy_server.url, "-u", "8", "-r", "8", "-t", "8s", "--only-summary",
         "--config-users", config, "--csv", str(prefix), "--html", str(tmp_path / "r.html")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert '"ChangeUser": 1' in output and '"StreamUser": 1' in output, output[-4000:]

    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
    with open(f"{prefix}_failures.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []
    for user_class, names in ENTRIES.items():
        count = sum(int(rows[n]["Request Count"]) for n in names if n in rows)
        assert count > 0, f"{user_class} made no requests: {sorted(rows)}"
    # The propagation entries are real delays: positive and well under the run's length.
    prop = rows["propagation rules"]
    assert 0 < float(prop["Max Response Time"]) < 5000, prop
    assert (tmp_path / "r.html").stat().st_size > 10_000
    # Stream tokens and keys never reach Locust's output.
    assert client not in output and "token=" not in output
