"""`flagedge serve` pieces that need no server: log redaction, fail-fast on bad settings."""

from __future__ import annotations

import logging

from proxy.cli import main
from proxy.commands.serve import RedactQuery, log_config


def test_access_log_lines_lose_their_query_strings():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", "/ofrep/v1/events?token=SECRET&key=K", "1.1",
                                200), None)
    assert RedactQuery().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "GET /ofrep/v1/events HTTP/1.1" 200'
    config = log_config("info")
    assert config["handlers"]["access"]["filters"] == ["redact"]


def test_bad_settings_and_key_files_exit_2_with_a_message(tmp_path, capsys):
    assert main(["serve", "--port", "0"]) == 2
    assert "port" in capsys.readouterr().err
    bad = tmp_path / "keys.json"
    bad.write_text('{"keys": [{"hash": "nope"}]}')
    assert main(["serve", "--keys", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "keys.json" in err and "keys[0].hash" in err
