"""The publishing CLI as users and scripts run it: `python -m proxy ...` subprocesses against
a real redis-server. Exit codes: 0 ok, 1 invalid, 2 usage/unreadable, 3 conflict, 4 Redis,
5 not found, 6 diff --exit-code with differences."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import redis

from tests.redis_server import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
HALF = {**ON, "targeting": {"fractional": [["on", 50], ["off", 50]]}}


def flagedge(*args: str, url: str | None = None, stdin: bytes | None = None,
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
    if url:
        env["FLAGEDGE_REDIS_URL"] = url
    env["FLAGEDGE_AUTHOR"] = "ci"
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, env=env,
                          input=stdin.decode() if stdin else None, capture_output=True,
                          text=True, timeout=60)


def doc_file(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(doc))
    return str(path)


def test_push_diff_history_export_rollback_flow(redis_server, tmp_path):
    url = redis_server.url
    v1 = doc_file(tmp_path, "v1.json", {"flags": {"a": ON, "b": ON}})
    r = flagedge("push", v1, "--env", "prod", "-m", "first", url=url)
    assert r.returncode == 0, r.stderr
    assert "+ a (added" in r.stdout and "pushed prod version 1: 2 added" in r.stdout
    v2 = doc_file(tmp_path, "v2.json", {"flags": {"a": {**ON, "defaultVariant": "off"}}})
    r = flagedge("diff", v2, "--env", "prod", "--exit-code", url=url)
    assert r.returncode == 6
    assert '~ a\n    defaultVariant: "on" -> "off"' in r.stdout and "- b (removed)" in r.stdout
    r = flagedge("push", v2, "--env", "prod", "--expect-version", "1", "-m", "second", url=url)
    assert r.returncode == 0, r.stderr
    assert flagedge("diff", v2, "--env", "prod", "--exit-code", url=url).returncode == 0
    r = flagedge("history", "--env", "prod", "--json", url=url)
    hist = orjson.loads(r.stdout)
    assert [(h["version"], h["message"], h["author"], h["flags"]) for h in hist] == [
        (2, "second", "ci", ["a", "b"]), (1, "first", "ci", ["a", "b"])]
    r = flagedge("history", "--env", "prod", url=url)
    assert "VERSION" in r.stdout and '"second"' in r.stdout
    exported = flagedge("export", "--env", "prod", url=url).stdout
    assert orjson.loads(exported)["flags"] == {"a": {**ON, "defaultVariant": "off"}}
    r = flagedge("rollback", "--env", "prod", "--to", "1", url=url)
    assert r.returncode == 0, r.stderr
    assert "version 3 equals version 1" in r.stdout
    assert orjson.loads(flagedge("export", "--env", "prod", url=url).stdout)["flags"] == {
        "a": ON, "b": ON}
    # export is byte-stable and pushing it back is a no-op
    out = tmp_path / "export.json"
    assert flagedge("export", "--env", "prod", "-o", str(out), url=url).returncode == 0
    assert out.read_text() == flagedge("export", "--env", "prod", url=url).stdout
    r = flagedge("push", str(out), "--env", "prod", url=url)
    assert r.returncode == 0 and "nothing to push: prod stays at version 3" in r.stdout
    r = flagedge("rollback", "--env", "prod", "--to", "9", url=url)
    assert r.returncode == 5 and "cannot roll back to 9" in r.stderr


def test_invalid_file_names_file_flag_and_path(redis_server, tmp_path):
    bad = doc_file(tmp_path, "bad.json", {"flags": {
        "checkout": {**ON, "targeting": {"fractional": [["on", 50.5], ["off", 49.5]]}},
        "other": {"state": "MAYBE", "variants": {"x": 1}, "defaultVariant": "x"}}})
    r = flagedge("push", bad, "--env", "prod", url=redis_server.url)
    assert r.returncode == 1
    assert f"{bad}: flags.checkout.targeting.fractional[1]" in r.stderr
    assert f"{bad}: flags.other.state" in r.stderr  # every problem, not just the first
    assert not redis.Redis.from_url(redis_server.url).exists("flagedge:{prod}:meta")
    r = flagedge("push", str(tmp_path / "missing.json"), "--env", "prod", url=redis_server.url)
    assert r.returncode == 2 and "missing.json" in r.stderr
    r = flagedge("push", "-", "--env", "bad{env}", url=redis_server.url, stdin=b"{}")
    assert r.returncode == 1 and "invalid environment name" in r.stderr
    r = flagedge("push", bad, url=redis_server.url)
    assert r.returncode == 2 and "--env" in r.stderr  # push always names --env


def test_concurrent_cli_pushes_with_expect_version_exactly_one_wins(redis_server, tmp_path):
    url = redis_server.url
    assert flagedge("push", doc_file(tmp_path, "base.json", {"flags": {"a": ON}}),
                    "--env", "prod", url=url).returncode == 0
    files = [doc_file(tmp_path, f"c{i}.json", {"flags": {"a": ON, f"f{i}": ON}})
             for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: flagedge("push", f, "--env", "prod",
                                                   "--expect-version", "1", url=url), files))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 3, 3, 3], [r.stderr for r in results]
    assert all("version conflict on environment prod" in r.stderr
               for r in results if r.returncode == 3)
    assert redis.Redis.from_url(url).hget("flagedge:{prod}:meta", "version") == b"2"


def test_dry_run_prints_rollout_impact_and_writes_nothing(redis_server, tmp_path):
    url = redis_server.url
    flagedge("push", doc_file(tmp_path, "v1.json", {"flags": {"a": ON, "b": ON}}),
             "--env", "prod", url=url)
    new = doc_file(tmp_path, "v2.json", {"flags": {"a": HALF, "b": ON}})
    r = flagedge("push", new, "--env", "prod", "--dry-run", "--json", url=url)
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    (impact,) = out["impact"]
    assert impact["flag"] == "a" and impact["contexts"] == 10_000
    assert 0.45 < impact["share"] < 0.55  # half the synthetic keys move from on to off
    assert impact["transitions"][0]["from"] == "on" and impact["transitions"][0]["to"] == "off"
    assert redis.Redis.from_url(url).hget("flagedge:{prod}:meta", "version") == b"1"
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(orjson.dumps({"targetingKey": f"u{i}"}).decode()
                                for i in range(200)) + "\n")
    r = flagedge("push", new, "--env", "prod", "--dry-run", "--sample", str(sample), url=url)
    assert r.returncode == 0, r.stderr
    assert f"rollout impact over 200 contexts from {sample}" in r.stdout
    assert "  a: " in r.stdout and "dry run: nothing written" in r.stdout
    sample.write_text('{"targetingKey": "x"}\n[1]\n')
    r = flagedge("push", new, "--env", "prod", "--dry-run", "--sample", str(sample), url=url)
    assert r.returncode == 1 and f"{sample}:2: each line must be a JSON object" in r.stderr


def test_envs_list_and_delete(redis_server, tmp_path):
    url = redis_server.url
    f = doc_file(tmp_path, "f.json", {"flags": {"a": ON}})
    for env in ("prod", "dev"):
        assert flagedge("push", f, "--env", env, url=url).returncode == 0
    envs = orjson.loads(flagedge("envs", "list", "--json", url=url).stdout)
    assert [(e["env"], e["version"], e["flags"], e["updated_by"]) for e in envs] == [
        ("dev", 1, 1, "ci"), ("prod", 1, 1, "ci")]
    r = flagedge("envs", "delete", "dev", url=url)
    assert r.returncode == 2 and "--yes" in r.stderr
    assert flagedge("envs", "delete", "dev", "--yes", url=url).returncode == 0
    assert [e["env"] for e in orjson.loads(
        flagedge("envs", "list", "--json", url=url).stdout)] == ["prod"]
    assert flagedge("envs", "delete", "dev", "--yes", url=url).returncode == 5


def test_unreachable_redis_is_exit_4_with_the_url(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    r = flagedge("push", doc_file(tmp_path, "f.json", {"flags": {"a": ON}}), "--env", "prod",
                 url=url)
    assert r.returncode == 4 and f"cannot reach Redis at {url}" in r.stderr
