"""The committed gRPC stubs are what `make proto` generates from the vendored proto now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_committed_stubs_equal_a_fresh_generation() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_vendored_proto_keeps_its_licence_beside_it() -> None:
    assert "Apache License" in (ROOT / "protobuf" / "LICENSE").read_text()
    proto = (ROOT / "protobuf" / "flagd" / "sync" / "v1" / "sync.proto").read_text()
    assert proto.startswith("/**\n * Flag definition sync API")
