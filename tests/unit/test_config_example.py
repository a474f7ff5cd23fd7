"""config/flagedge.toml documents every setting of `flagedge serve`, with its env var, and its
values are the code's defaults (so the example cannot drift from proxy/config.py)."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.config import ENV_PREFIX, Settings, load_settings, settings_fields

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "flagedge.toml"
SETTING_LINE = re.compile(r"^(#\s*)?([a-z_][a-z0-9_-]*)\s*=", re.M)


def named_settings() -> dict[str, bool]:
    """Setting name -> active (False when shown commented out)."""
    return {m.group(2).replace("-", "_"): m.group(1) is None
            for m in SETTING_LINE.finditer(EXAMPLE.read_text())}


def test_example_names_every_setting_field_and_nothing_else():
    assert set(named_settings()) == set(settings_fields())


def test_example_loads_with_the_real_loader_and_equals_the_defaults():
    assert load_settings(config=EXAMPLE, environ={}) == Settings()


def test_commented_out_settings_are_exactly_those_without_a_default():
    unset = {name for name, active in named_settings().items() if not active}
    assert unset == {name for name in settings_fields() if getattr(Settings(), name) is None}


def test_every_setting_names_its_env_var():
    text = EXAMPLE.read_text()
    missing = [name for name in settings_fields() if ENV_PREFIX + name.upper() not in text]
    assert missing == []


def test_env_vars_override_the_example_file():
    s = load_settings(config=EXAMPLE, environ={"FLAGEDGE_PORT": "9090",
                                               "FLAGEDGE_CORS_ORIGINS": "https://a.example,*"})
    assert s.port == 9090 and s.cors_origins == ("https://a.example", "*")
