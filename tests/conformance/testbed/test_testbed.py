"""flagd's provider testbed (open-feature/flagd-testbed, vendored in ``vendor/``) over OFREP.

Each scenario row is one test: a real ``flagedge serve --flags <testbed flag file>`` answers
it over HTTP, read as an OpenFeature SDK's OFREP provider reads it (``steps.py``). What is not
run, and why, is listed in ``tests/conformance/README.md`` and in ``SKIPPED_*`` below; every
row that is run is asserted, none is counted as passing by being skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conformance.testbed.gherkin import Scenario, parse
from tests.conformance.testbed.steps import World, run, typed, unsupported
from tests.redis_server import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.conformance

ROOT = Path(__file__).resolve().parents[3]
VENDOR = Path(__file__).resolve().parent / "vendor"

#: Features about an SDK provider's own machinery, not about evaluation answers.
SKIPPED_FEATURES = {
    "gherkin/config": "provider option parsing (host, port, resolver type...) of flagd's SDKs",
    "gherkin/connection": "gRPC / in-process connection lifecycle of flagd's providers",
    "gherkin/events": "provider events over flagd's gRPC sync",
    "gherkin/rpc-caching": "the RPC provider's client-side cache",
    "gherkin/sync-payload": "flagd's sync payload (the flagd-sync issue covers it)",
    "gherkin/contextEnrichment": "flagd's static context enrichment (flagd -X): flagedge has none",
}
#: Tags whose rows are not run.
SKIPPED_TAGS = {
    "@fractional-v1": "legacy float bucketing of old flagd releases; flagedge never served it",
    "@deprecated": "superseded by @no-default-variant, whose rows contradict it (FLAG_NOT_FOUND vs DEFAULT)",
}
#: Rows tagged @fractional-v3 run against a server of the same file declaring
#: ``"$fractionalHash": "v3"`` (flagedge's v3 hashing, DESIGN §9); every other row against the
#: file as it is (v2, the default).
V3_TAG = "@fractional-v3"
V3_PREFIX = "v3:"
#: Rows where flagedge answers otherwise on purpose (docs/design-notes.md, "flagd testbed"):
#: id -> (value, reason, error code) the SDK sees, and why.
DECIDED = {
    "gherkin/targeting:Fractional operator invalid implicit inputs[2]": (
        "fallback", "ERROR", "INVALID_CONTEXT",
        "a non-string targetingKey is an invalid OFREP context (400 INVALID_CONTEXT)"),
    "gherkin/targeting:Fractional operator invalid implicit inputs[3]": (
        "fallback", "ERROR", "INVALID_CONTEXT",
        "a non-string targetingKey is an invalid OFREP context (400 INVALID_CONTEXT)"),
}


def scenarios() -> list[Scenario]:
    out = []
    for path in sorted(VENDOR.glob("**/*.feature")):
        out.extend(parse(path, str(path.relative_to(VENDOR).with_suffix(""))))
    return out


def _param(s: Scenario) -> object:
    marks: list[pytest.MarkDecorator] = []
    skipped = SKIPPED_FEATURES.get(s.feature) or next(
        (why for tag, why in SKIPPED_TAGS.items() if tag in s.tags), None)
    if skipped:
        marks.append(pytest.mark.skip(reason=skipped))
    return pytest.param(s, id=s.id, marks=marks)


ALL = scenarios()


def all_flags(tmp: Path) -> Path:
    """flagd-testbed's ``allFlags.json``: every ``flags/*.json`` but ``selector-*`` deep-merged
    in name order, as its launchpad builds it (``launchpad/pkg/json.go``)."""
    merged: dict = {}
    for path in sorted((VENDOR / "flags").glob("*.json")):
        if not path.name.startswith("selector-"):
            _deep_merge(merged, orjson.loads(path.read_bytes()))
    out = tmp / "allFlags.json"
    out.write_bytes(orjson.dumps(merged, option=orjson.OPT_INDENT_2))
    return out


def _deep_merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = value


class Served:
    """``flagedge serve --flags FILE --no-auth`` on a free port, started on first use."""

    def __init__(self, path: Path, log: Path):
        self.path, self.log = path, log
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEDGE_")}
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--flags", str(path), "--no-auth", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        wait_until(self._ready, timeout=30, interval=0.05, what=f"flagedge serving {path.name}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"flagedge serve exited:\n{self.log.read_text(errors='replace')}")
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(15)
        self._out.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], httpx.Client]]:
    """selector -> client of a server for that flag file ("" = allFlags.json, "evaluator" =
    the evaluator suite's testkit-flags.json)."""
    tmp = tmp_path_factory.mktemp("testbed")
    merged = all_flags(tmp)
    files = {
        "": merged,
        "flags/allFlags.json": merged,
        "rawflags/selector-flags.json": VENDOR / "flags" / "selector-flags.json",
        "rawflags/selector-flag-combined-metadata.json":
            VENDOR / "flags" / "selector-flag-combined-metadata.json",
        "evaluator": VENDOR / "evaluator" / "flags" / "testkit-flags.json",
    }
    started: dict[Path, Served] = {}

    def client_for(selector: str) -> httpx.Client:
        if selector.startswith(V3_PREFIX):
            path = declared_v3(files[selector.removeprefix(V3_PREFIX)], tmp)
        else:
            path = files[selector]
        if path not in started:
            started[path] = Served(path, tmp / f"serve-{len(started)}.log")
        return started[path].client

    yield client_for
    for served in started.values():
        served.stop()


def declared_v3(path: Path, tmp: Path) -> Path:
    """A copy of a flag file declaring v3 hashing (written once per file)."""
    out = tmp / f"v3-{path.parent.name}-{path.name}"
    if not out.exists():
        doc = orjson.loads(path.read_bytes())
        doc["$fractionalHash"] = "v3"
        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return out


def _v3_servers(servers: Callable[[str], httpx.Client]) -> Callable[[str], httpx.Client]:
    return lambda selector: servers(V3_PREFIX + selector)


@pytest.mark.parametrize("scenario", [_param(s) for s in ALL])
def test_scenario(scenario: Scenario, servers: Callable[[str], httpx.Client]) -> None:
    missing = unsupported(scenario)
    assert not missing, f"steps without an action: {missing}"
    evaluator = scenario.feature.startswith("evaluator/")
    if V3_TAG in scenario.tags:
        servers = _v3_servers(servers)
    world = World(servers, evaluator_suite=evaluator, selector="evaluator" if evaluator else "")
    decided = DECIDED.get(scenario.id)
    if decided is None:
        run(scenario, world)
        return
    value, reason, code, _why = decided
    checks = ("the resolved details value", "the reason", "the error-code")
    setup = [s for s in scenario.steps if not s.text.startswith(checks)]
    details = run(Scenario(scenario.feature, scenario.name, scenario.tags, tuple(setup),
                           scenario.row), world)
    assert (details.value, details.reason, details.error_code) == (
        typed(world.flag_type, value), reason, code), details
