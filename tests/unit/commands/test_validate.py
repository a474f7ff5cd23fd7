"""`flagedge validate` as a real subprocess: exit codes and messages naming file, flag, path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "validate", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_demo_file_is_valid() -> None:
    r = validate("config/flags.json")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("config/flags.json: valid - 8 flags (4 boolean, 2 string, 1 number, 1 object; 1 disabled, 6 targeted), 2 evaluators")


def test_invalid_file_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "flags.json"
    bad.write_text(json.dumps({"flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
                         "targeting": {"if": [{"fractional": [["on", 50], ["off", 49.5]]}, "on"]}},
        "banner": {"state": "SOMETIMES", "variants": {"a": "x", "b": 2}, "defaultVariant": "c"},
    }}))
    r = validate(str(bad))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert lines == [
        f"{bad}: flags.new-checkout.targeting.if[0].fractional[1]: weight must be an integer",
        f"{bad}: flags.banner.state: unknown state 'SOMETIMES' (use ENABLED or DISABLED)",
        f"{bad}: flags.banner.variants: variants must all have one type, found string: a, number: b",
        f"{bad}: flags.banner.defaultVariant: 'c' is not one of the variants (a, b)",
    ]
    assert "4 problems" in r.stderr


def test_bad_json_is_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"flags": ')
    r = validate(str(bad))
    assert r.returncode == 1
    assert r.stdout.startswith(f"{bad}: invalid JSON")


def test_unreadable_file_is_exit_2(tmp_path: Path) -> None:
    r = validate(str(tmp_path / "missing.json"))
    assert r.returncode == 2
    assert "missing.json" in r.stderr and r.stdout == ""


def test_json_output(tmp_path: Path) -> None:
    good = validate("--json", "config/flags.json")
    assert good.returncode == 0
    body = json.loads(good.stdout)
    assert body["valid"] is True and body["summary"]["flags"] == 8 and body["summary"]["kinds"]["object"] == 1
    bad = tmp_path / "f.json"
    bad.write_text(json.dumps({"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"$ref": "nope"}}}}))
    r = validate(str(bad), "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["problems"] == [{"path": "flags.x.targeting", "message": "unknown $ref 'nope' (no such entry in $evaluators)", "warning": False}]
    assert out["served_as_errors"] == {"x": "PARSE_ERROR"}  # what serve does with the file anyway


def test_flagd_operator_checks_are_warnings_that_still_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "f.json"
    bad.write_text(json.dumps({"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                                               "targeting": {"starts_with": ["abc"]}}}}))
    r = validate(str(bad))
    assert r.returncode == 1
    assert f"{bad}: flags.x.targeting.starts_with: starts_with takes 2 arguments, got 1\n" in r.stdout
    assert "nothing changed" in r.stderr
    assert "flagd answers null when it evaluates these" in r.stderr and "starts_with" in r.stderr
