"""Settings precedence (TOML < FLAGEDGE_* env < CLI flags) and clear errors."""

from pathlib import Path

import pytest

from proxy.config import Settings, SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flagedge.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source():
    s = load_settings(cli={}, environ={})
    assert s == Settings()
    assert s.port == 8080 and s.body_limit == 64 * 1024 and s.cors_origins == ()


def test_precedence_toml_then_env_then_cli(tmp_path):
    cfg = write(tmp_path, 'port = 9000\nenv = "toml"\nrate_limit = 5\ncors-origins = ["https://a"]\n')
    s = load_settings(cli={"config": cfg}, environ={})
    assert (s.port, s.env, s.rate_limit, s.cors_origins) == (9000, "toml", 5.0, ("https://a",))

    environ = {"FLAGEDGE_PORT": "9100", "FLAGEDGE_CORS_ORIGINS": "https://b, https://c"}
    s = load_settings(cli={"config": cfg}, environ=environ)
    assert (s.port, s.env, s.cors_origins) == (9100, "toml", ("https://b", "https://c"))

    s = load_settings(cli={"config": cfg, "port": 9200, "env": None}, environ=environ)
    assert (s.port, s.env) == (9200, "toml")  # None = flag not given


def test_config_path_from_env_var(tmp_path):
    cfg = write(tmp_path, "[flagedge]\nworkers = 3\nno_auth = true\n")
    s = load_settings(cli={}, environ={"FLAGEDGE_CONFIG": str(cfg)})
    assert s.workers == 3 and s.no_auth is True


def test_booleans_paths_and_floats_from_env():
    s = load_settings(cli={}, environ={"FLAGEDGE_NO_AUTH": "yes", "FLAGEDGE_FLAGS": "/x/f.json",
                                       "FLAGEDGE_RATE_LIMIT": "2.5", "FLAGEDGE_CLUSTER": "0"})
    assert s.no_auth is True and s.flags == Path("/x/f.json") and s.rate_limit == 2.5
    assert s.cluster is False


@pytest.mark.parametrize(("cli", "environ", "needle"), [
    ({}, {"FLAGEDGE_PORT": "eighty"}, "FLAGEDGE_PORT"),
    ({}, {"FLAGEDGE_NO_AUTH": "maybe"}, "FLAGEDGE_NO_AUTH"),
    ({"port": 70000}, {}, "port"),
    ({"workers": 0}, {}, "workers"),
    ({"flags": "a.json", "bootstrap": "b.json"}, {}, "--flags"),
    ({"env": "a:b"}, {}, "env"),
    ({}, {"FLAGEDGE_SSE_SEND_BUFFER": "-1"}, "sse_send_buffer"),
    ({}, {"FLAGEDGE_HEADER_TIMEOUT": "0"}, "header_timeout"),
    ({"body_timeout": -1}, {}, "body_timeout"),
    ({"max_connections": 0}, {}, "max_connections"),
    ({"sse_max_per_address": 0}, {}, "sse_max_per_address"),
    ({}, {"FLAGEDGE_TRUSTED_PROXIES": "10.0.0.0/8,lb.internal"}, "'lb.internal'"),
])
def test_bad_values_name_their_origin(cli, environ, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(cli=cli, environ=environ)


def test_trusted_proxies_from_env_are_a_list():
    s = load_settings(cli={}, environ={"FLAGEDGE_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert s.trusted_proxies == ("10.0.0.0/8", "::1")


def test_unknown_toml_key_and_bad_toml_name_the_file(tmp_path):
    cfg = write(tmp_path, "prot = 1\n")
    with pytest.raises(SettingsError, match=r"flagedge.toml: unknown setting 'prot'"):
        load_settings(cli={"config": cfg}, environ={})
    cfg = write(tmp_path, "port = \n")
    with pytest.raises(SettingsError, match=r"flagedge\.toml"):
        load_settings(cli={"config": cfg}, environ={})
    with pytest.raises(SettingsError, match="no such config file"):
        load_settings(cli={"config": tmp_path / "missing.toml"}, environ={})


def test_toml_type_errors(tmp_path):
    cfg = write(tmp_path, 'port = 1.5\n')
    with pytest.raises(SettingsError, match="port"):
        load_settings(cli={"config": cfg}, environ={})


def test_json_round_trip_for_workers():
    s = load_settings(cli={"cors_origins": "*", "keys": "/k.json", "port": 81}, environ={})
    again = load_settings(cli=s.to_json(), environ={})
    assert again == s


def test_redis_url_aliases(tmp_path):
    s = load_settings(cli={}, environ={"FLAGEDGE_REDIS_URL": "redis://h:1/0"})
    assert s.redis == "redis://h:1/0"
    cfg = write(tmp_path, 'redis_url = "redis://t:2/0"\n')
    assert load_settings(cli={"config": cfg}, environ={}).redis == "redis://t:2/0"


def test_stream_secret_alias_and_its_precedence():
    assert load_settings(environ={"FLAGEDGE_SECRET": "old-name"}).stream_secret == "old-name"
    both = {"FLAGEDGE_SECRET": "old-name", "FLAGEDGE_STREAM_SECRET": "canonical"}
    assert load_settings(environ=both).stream_secret == "canonical"


@pytest.mark.parametrize("port", ["-1", "70000", "8080"])
def test_admin_port_must_be_another_tcp_port(port):
    with pytest.raises(SettingsError, match="admin_port"):
        load_settings(cli={"admin_port": port}, environ={})
    assert load_settings(cli={"admin_port": "9090"}, environ={}).admin_port == 9090
