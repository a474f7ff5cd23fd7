"""The UI's vendored assets are the pinned npm files (proxy.ui.assets), and the package data
declared in pyproject.toml ships every template and asset (the wheel itself is built by
tests/integration/test_ui_wheel.py)."""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from pathlib import Path

from proxy.ui.assets import STATIC, VENDORED

ROOT = Path(__file__).resolve().parents[3]
UI = ROOT / "proxy" / "ui"


def test_each_vendored_file_matches_its_pin() -> None:
    for asset in VENDORED:
        digest = hashlib.sha256((STATIC / asset.path).read_bytes()).hexdigest()
        assert digest == asset.sha256, f"{asset.path} is not {asset.package} {asset.source}"


def test_every_vendored_file_is_pinned_and_htmx_stays_on_2_0() -> None:
    on_disk = {str(p.relative_to(STATIC)) for p in (STATIC / "vendor").iterdir()}
    assert on_disk == {a.path for a in VENDORED}
    assert all(a.package.startswith(("htmx.org@2.0.", "htmx-ext-sse@2.")) for a in VENDORED)


def test_package_data_covers_every_template_and_asset() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["proxy.ui"]
    files = [str(p.relative_to(UI)) for sub in ("templates", "static")
             for p in (UI / sub).rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") ==
                                           pat.count("/") for pat in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
