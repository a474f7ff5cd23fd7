"""`flagedge serve` pieces that need no server: log redaction, fail-fast on bad settings."""

from __future__ import annotations

from proxy.cli import main
from proxy.commands.serve import log_config


def test_access_log_is_the_buffered_handler_of_proxy_server_access_log():
    config = log_config("info")
    assert config["handlers"]["access"] == {"()": "proxy.server.access_log.AccessLogHandler"}
    assert config["loggers"]["flagedge.access"]["handlers"] == ["access"]
    # uvicorn's own access log stays off: our protocol records the responses.
    assert config["loggers"]["uvicorn.access"]["handlers"] == []


def test_no_access_log_creates_no_handler():
    config = log_config("info", access_log=False)
    assert "access" not in config["handlers"] and "flagedge.access" not in config["loggers"]


def test_bad_settings_and_key_files_exit_2_with_a_message(tmp_path, capsys):
    assert main(["serve", "--port", "0"]) == 2
    assert "port" in capsys.readouterr().err
    bad = tmp_path / "keys.json"
    bad.write_text('{"keys": [{"hash": "nope"}]}')
    assert main(["serve", "--keys", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "keys.json" in err and "keys[0].hash" in err
