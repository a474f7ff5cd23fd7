"""FileSource (offline --flags mode): load, reload on edit; invalid flags are served as their
error, an edit that is no flag document keeps the last good rules."""

from __future__ import annotations

import asyncio
import logging
import os

import orjson
import pytest

from proxy.evaluation.engine import evaluate
from proxy.model import ErrorCode
from proxy.sources.file import FileSource
from proxy.store import Store
from tests.integration.source_support import stop, until

pytestmark = pytest.mark.integration

ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}


def write(path, data: bytes) -> None:
    """Save like an editor: write a temp file and rename it over the original."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_file_mode_reloads_on_edit_serves_bad_flags_as_errors_keeps_last_good(tmp_path, caplog):
    path = tmp_path / "flags.json"
    path.write_bytes(orjson.dumps({"flags": {"a": ON}}))
    store = Store()
    source = FileSource(path, store, env="local")
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready, what="initial load")
        assert store.get("local").version == 1 and set(store.get("local").flags) == {"a"}
        assert source.secret
        await until(lambda: source.watching, what="file watch armed")
        write(path, orjson.dumps({"flags": {"a": {**ON, "defaultVariant": "off"}, "b": ON}}))
        await until(lambda: store.get("local").version == 2, what="reload after edit")
        assert store.get("local").flags["a"].default_variant == "off"
        with caplog.at_level(logging.ERROR, logger="flagedge.sources.file"):
            # invalid flags: a keeps the version served before, the new n answers its
            # evaluation-time error, b and c are served as written
            write(path, b'{"flags": {"a": {"state": "MAYBE", "variants": {}}, "n": 1, "b": '
                        + orjson.dumps(ON) + b', "c": ' + orjson.dumps(ON) + b"}}")
            await until(lambda: store.get("local").version == 3, what="edit with bad flags")
        fs = store.get("local")
        assert set(fs.rejected) == {"a", "n"} and store.rejected_total == 2
        assert fs.flags["a"].default_variant == "off"  # last good version kept
        assert evaluate(fs, "n", {}).error_code is ErrorCode.PARSE_ERROR
        assert evaluate(fs, "c", {}).value is True and not store.degraded()
        assert "flag=a path=flags.a.state" in caplog.text and "last good version kept" in caplog.text
        assert f"file={path}" in caplog.text
        assert "path=flags.a" in caplog.text and "path=flags.n" in caplog.text  # every problem
        with caplog.at_level(logging.ERROR, logger="flagedge.sources.file"):
            write(path, b'{"flags": {"a": ')  # no flag document at all: last good kept
            await until(lambda: store.rejected_total == 3, what="invalid edit rejected")
        assert store.get("local").version == 3
        assert "invalid flag file" in store.degraded()["local"]
        write(path, orjson.dumps({"flags": {"c": ON}}))
        await until(lambda: store.get("local").version == 4, what="fixed edit loaded")
        assert set(store.get("local").flags) == {"c"} and not store.degraded()
        assert not store.get("local").rejected
    finally:
        await stop(task)


async def test_unchanged_content_does_not_bump_the_version(tmp_path):
    path = tmp_path / "flags.json"
    path.write_bytes(orjson.dumps({"flags": {"a": ON}}))
    store = Store()
    source = FileSource(path, store)
    assert source.reload() and store.get("default").version == 1
    path.write_bytes(orjson.dumps({"flags": {"a": ON}}))
    assert not source.reload() and store.get("default").version == 1
    path.unlink()
    assert not source.reload()
    assert "cannot read" in store.degraded()["default"] and store.get("default").version == 1
