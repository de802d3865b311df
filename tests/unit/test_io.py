"""Run files: atomic writes keep the usual permissions; JSON-lines logs survive a crash mid-write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from decembert_cli.errors import DecembertError
from decembert_cli.io import append_jsonl, atomic_write_text, read_jsonl


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_torn_last_line_is_dropped_with_a_note(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2})
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "lo')  # a crash mid-write
    rows, note = read_jsonl(log)
    assert rows == [{"step": 1}, {"step": 2}] and note is not None and "line 3" in note
    log.write_text('{"step": 1}\n{"step": 2}\n')
    assert read_jsonl(log) == ([{"step": 1}, {"step": 2}], None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"step": 1}\n{"step": 2,,}\n{"step": 3}\n', "line 2, column 12: not JSON"),
        ('{"step": 1}\n{"step": 2,\n', "line 2, column 12: not JSON"),  # a newline follows: not a torn write
        ("[1, 2]\n", "line 1: expected a JSON object, got list"),
        ("[" * 100000 + "\n", "line 1"),
    ],
)
def test_other_bad_lines_name_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text(text)
    with pytest.raises(DecembertError, match=message):
        read_jsonl(log)


def test_a_failed_append_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "metrics.jsonl"
    folder.mkdir()  # appending to it fails as a full disk would: with an OSError
    with pytest.raises(DecembertError, match=r"cannot append to .*metrics.jsonl: .*run again"):
        append_jsonl(folder, {"step": 1})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,\n "b": }', r"f.json, line 2, column 7: not valid JSON"),
        ('{"start": [' + "9" * 400 + "]}", r"f.json: a 400-digit number is too large"),
        ("[" * 100000 + "]" * 100000, r"f.json: JSON nested too deeply"),
    ],
)
def test_json_errors_are_one_message_naming_the_file(text: str, message: str) -> None:
    from decembert_cli.io import decode_json

    with pytest.raises(DecembertError, match=message):
        decode_json(text, "f.json")
