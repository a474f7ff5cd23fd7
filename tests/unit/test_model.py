"""State ids (proxy.model.state_id / id_version): what every stream ``id:``, OFREP etag and
``/v1/rules`` ETag carries, and what a client's ``Last-Event-ID`` is read back with."""

from __future__ import annotations

import dataclasses
import re

import pytest

from proxy.model import FlagSet, id_version, state_id


def test_a_state_id_is_the_version_then_an_eight_hex_tag():
    sid = state_id(12, "e1", "1700000000000-0")
    assert re.fullmatch(r"12-[0-9a-f]{8}", sid), sid
    assert id_version(sid) == 12


def test_equal_inputs_give_equal_ids_on_every_replica():
    assert state_id(3, "e1", "1-0") == state_id(3, "e1", "1-0")
    assert FlagSet(flags={}, version=3, epoch="e1", revision="1-0").state_id == \
        state_id(3, "e1", "1-0")


def test_the_epoch_or_the_revision_changes_the_tag_not_the_version():
    base = state_id(3, "e1", "1-0")
    other_epoch = state_id(3, "e2", "1-0")
    other_write = state_id(3, "e1", "2-0")
    assert len({base, other_epoch, other_write}) == 3
    assert {id_version(i) for i in (base, other_epoch, other_write)} == {3}
    # The two parts are kept apart: moving text from one to the other is another state.
    assert state_id(3, "e1", "x") != state_id(3, "e1x", "")


def test_a_files_state_has_an_id_too():
    fs = FlagSet(flags={}, version=4, epoch="e1")
    assert fs.revision == "" and fs.state_id == state_id(4, "e1", "")


def test_replace_recomputes_the_id():
    fs = FlagSet(flags={}, version=5, epoch="e1", revision="10-0")
    moved = dataclasses.replace(fs, revision="11-0")
    assert moved.state_id == state_id(5, "e1", "11-0") != fs.state_id
    assert dataclasses.replace(fs, version=6).state_id == state_id(6, "e1", "10-0")
    assert dataclasses.replace(fs, epoch="e2").state_id == state_id(5, "e2", "10-0")
    assert fs.state_id == state_id(5, "e1", "10-0")  # the original is untouched


@pytest.mark.parametrize(("raw", "version"), [
    ("12-abcd1234", 12),
    ("12", 12),  # a bare version, as older servers sent
    (" 7-0000ffff ", 7),
    ("0", 0),
    ("9" * 18, int("9" * 18)),
])
def test_id_version_reads_the_version_of_an_id(raw: str, version: int):
    assert id_version(raw) == version


@pytest.mark.parametrize("raw", [
    None, "", "   ", "x-1", "-1", "abc", "1.5", "+3", "1_000", "12abc-0",
    "9" * 19,  # longer than any version: not a number to trust (nor to convert)
])
def test_id_version_rejects_what_is_not_a_version(raw: str | None):
    assert id_version(raw) is None


@pytest.mark.parametrize("raw", [
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
    "\u00b2",  # SUPERSCRIPT TWO (byte 0xB2 of a latin-1 header): isdigit(), but int() raises
    "1\u00b2-0000ffff",
])
def test_id_version_reads_only_ascii_digits(raw: str):
    assert id_version(raw) is None
