"""The built wheel ships the UI's templates and assets (DESIGN §12: package data, no CDN):
``pip wheel`` of this tree, then every file under proxy/ui/templates and proxy/ui/static is
in it, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "proxy" / "ui"


def test_the_wheel_contains_every_template_and_asset(tmp_path: Path) -> None:
    # A copy of the package sources only: setuptools writes build/ and *.egg-info next to
    # pyproject.toml, which must not land in the working tree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "proxy", src / "proxy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("flagedge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = [p for sub in ("templates", "static") for p in (UI / sub).rglob("*")
                    if p.is_file()]
        assert len(expected) >= 10
        for path in expected:
            member = str(path.relative_to(ROOT))
            assert member in names, f"{member} is not in {wheel.name}"
            assert zf.read(member) == path.read_bytes(), member
