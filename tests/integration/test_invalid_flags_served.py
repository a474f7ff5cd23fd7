"""One bad flag never takes the others down (DESIGN §2, issue 26), end to end: a real
`flagedge serve` over a flag file (--flags), a bootstrap file (--bootstrap, Redis down) and
Redis (an invalid flag written past validation, as a foreign tool would) serves every valid
flag, answers the invalid one with the error flagd gives for it, and reports it in /readyz
(still ready), the metric and the log. A file that is no flag document at all is reported as
an invalid file, never as an unreachable source. The write path stays strict."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest

from proxy.release import publisher
from proxy.release.changeset import Plan
from proxy.storage import layout
from tests.integration.conftest import ROOT
from tests.redis_server import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
DOC = {"flags": {
    "good": ON,
    "bad-op": {**ON, "targeting": {"invalid": [1]}},
    "bad-variant": {**ON, "targeting": {"if": [True, "three", "on"]}},
    "semver-arity": {**ON, "targeting": {"sem_ver": [{"var": "v"}, "="]}},
}}


def _evaluate(server, key: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/ofrep/v1/evaluate/flags/{key}", json={"context": {}},
                      headers=headers or {}, timeout=5)


def _check_served(server, headers: dict | None = None) -> None:
    good = _evaluate(server, "good", headers)
    assert good.status_code == 200 and good.json()["value"] is True
    bad = _evaluate(server, "bad-op", headers)
    assert bad.status_code == 400 and bad.json()["errorCode"] == "PARSE_ERROR"
    assert "unknown operator 'invalid'" in bad.json()["errorDetails"]
    general = _evaluate(server, "bad-variant", headers)
    assert general.status_code == 400 and general.json()["errorCode"] == "GENERAL"
    semver = _evaluate(server, "semver-arity", headers).json()  # flagd: null -> DEFAULT
    assert (semver["reason"], semver["value"]) == ("DEFAULT", True)
    bulk = httpx.post(f"{server.url}/ofrep/v1/evaluate/flags", json={"context": {}},
                      headers=headers or {}, timeout=5).json()["flags"]
    items = {i["key"]: i for i in bulk}
    assert items["good"]["value"] is True and items["bad-op"]["errorCode"] == "PARSE_ERROR"
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["rejected"] == 2, ready.text
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'flagedge_rules_rejected_flags{env="' in metrics
    assert any(line.startswith("flagedge_rules_rejected_flags{") and line.endswith(" 2.0")
               for line in metrics.splitlines()), metrics


def test_flag_file_with_an_invalid_flag_serves_every_other_flag(proxy_factory, tmp_path):
    path = tmp_path / "flags.json"
    path.write_bytes(orjson.dumps(DOC))
    server = proxy_factory(redis=None, env="default", wait="readyz",
                           extra_args=["--flags", str(path), "--no-auth"])
    _check_served(server)
    logs = server.logs()
    assert f"file={path}" in logs and "flag=bad-op path=flags.bad-op.targeting" in logs
    assert "served as PARSE_ERROR" in logs


def test_flag_file_that_is_no_document_is_reported_invalid_not_unreachable(proxy_factory,
                                                                          tmp_path):
    path = tmp_path / "flags.json"
    path.write_bytes(b'{"flags": {"good": ')
    server = proxy_factory(redis=None, env="default",
                           extra_args=["--flags", str(path), "--no-auth"])
    wait_until(lambda: "invalid flag file" in server.logs(), timeout=10, what="rejection")
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503 and "invalid" in ready.json()["reason"], ready.text
    answer = _evaluate(server, "good")
    assert answer.status_code == 503
    assert "invalid" in answer.text and "not reachable" not in answer.text, answer.text
    path.write_bytes(orjson.dumps(DOC))  # fixed: served
    server.wait_for("readyz")
    _check_served(server)


def test_bootstrap_file_with_an_invalid_flag_serves_every_other_flag(proxy_factory, tmp_path):
    path = tmp_path / "boot.json"
    path.write_bytes(orjson.dumps(DOC))
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the bootstrap file serves
    server = proxy_factory(redis=None, env="default", wait="readyz",
                           extra_args=["--redis", down, "--bootstrap", str(path), "--no-auth"])
    _check_served(server)


def test_redis_flag_written_past_validation_is_served_as_its_error(proxy_server):
    proxy_server.push({"flags": {"good": ON}})
    key = proxy_server.create_key()
    auth = {"Authorization": f"Bearer {key}"}
    plan = Plan(added={k: v for k, v in DOC["flags"].items() if k != "good"}, changed={},
                removed={})
    result = publisher.write(proxy_server.redis_client, proxy_server.env, plan)  # a foreign tool
    proxy_server.wait_version(result.version)
    _check_served(proxy_server, auth)
    # fixing the flag takes it out of the rejected count
    fixed = Plan(added={}, changed={"bad-op": (DOC["flags"]["bad-op"], ON)}, removed={})
    proxy_server.wait_version(publisher.write(proxy_server.redis_client, proxy_server.env,
                                              fixed).version)
    assert _evaluate(proxy_server, "bad-op", auth).json()["value"] is True
    assert httpx.get(f"{proxy_server.url}/readyz", timeout=5).json()["rejected"] == 1


def test_write_path_stays_strict(proxy_server, tmp_path):
    path = tmp_path / "flags.json"
    path.write_bytes(orjson.dumps(DOC))
    for command in (["validate", str(path)],
                    ["push", str(path), "--redis", proxy_server.redis.url, "--env", "test"]):
        out = subprocess.run([sys.executable, "-m", "proxy", *command], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0, out
        text = out.stdout + out.stderr
        assert "flags.bad-op.targeting" in text and "flags.semver-arity.targeting.sem_ver" in text
    assert not proxy_server.redis_client.exists(layout.flags_key("test"))


def test_in_process_provider_follows_a_source_with_an_invalid_flag(proxy_server):
    """The rules stream carries the invalid flag as written; the in-process provider serves
    it as its error too instead of refusing the whole update."""
    from openfeature import api
    from openfeature.exception import ErrorCode

    from proxy.provider import FlagedgeProvider

    proxy_server.push({"flags": {"good": ON}})
    key = proxy_server.create_key("server")
    publisher.write(proxy_server.redis_client, proxy_server.env,
                    Plan(added={"bad-op": DOC["flags"]["bad-op"]}, changed={}, removed={}))
    provider = FlagedgeProvider(proxy_server.url, key, init_timeout=10.0,
                                backoff_initial=0.05, backoff_max=0.5)
    try:
        api.set_provider_and_wait(provider, domain="invalid-flags")
        client = api.get_client("invalid-flags")
        wait_until(lambda: client.get_boolean_details("bad-op", False).error_code
                   is ErrorCode.PARSE_ERROR, timeout=10, what="bad flag served as its error")
        assert client.get_boolean_details("good", False).value is True
    finally:
        api.shutdown()
