"""Files a run writes: atomic writes (a reader sees the old file or the new one, never half of one)
and JSON-lines logs (appended line by line; a torn last line from a crash is dropped on reading)."""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from decembert_cli.errors import DecembertError

METRICS_LOG = "metrics.jsonl"  # a run folder's metrics log: one JSON object per line
MAX_ID_BYTES = 200  # a video id names files ({id}.npy, .{id}.npy.XXXX.tmp): file names stay under 255 bytes
_UNSAFE_ID = re.compile(r"(^\.|[/\\\x00-\x1f\x7f]|^$)")


def safe_id(video_id: object) -> bool:
    """Whether an id (of a video, a clip, a prediction) can name files in an output folder: a string with no
    separator, no leading dot (hidden names, ".."), no control character, not empty, at most MAX_ID_BYTES in
    UTF-8 (and encodable). Ids are names, never paths: every reader of ids from files checks it."""
    if not isinstance(video_id, str) or _UNSAFE_ID.search(video_id):
        return False
    try:
        return len(video_id.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # a lone surrogate (from a file name that is not UTF-8)
        return False


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """`path` if it is a regular file (a symlink to one is fine); else one error naming it. Called before
    any open() of an input: a FIFO or a device would block or never end."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DecembertError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DecembertError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, a socket or a device)"
        raise DecembertError(f"{what} {path} is {kind}; give a regular file")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DecembertError(f"cannot write {path}: {exc.strerror}; choose a writable folder") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DecembertError(f"cannot write {path}: {exc.strerror}; the previous file, if any, is unchanged") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomic `write_text` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


MAX_INT_DIGITS = 30  # longer integers in a JSON file are no time, size or id this toolkit reads


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a {len(text)}-digit number")
    return int(text)


def decode_json(text: str, where: str, *, huge_ints: bool = False) -> Any:
    """json.loads whose every failure is one DecembertError naming `where` (a file, a line): syntax
    errors with line and column, nesting too deep, numbers too large to use (unless `huge_ints`:
    a reader that checks each entry on its own and fails only that entry)."""
    try:
        return json.loads(text, parse_int=int if huge_ints else _parse_int)
    except json.JSONDecodeError as exc:
        raise DecembertError(f"{where}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DecembertError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # from _parse_int
        raise DecembertError(f"{where}: {exc} is too large for any value here") from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; an OSError (disk full, folder gone) is one clear error."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise DecembertError(
            f"cannot append to {path}: {exc.strerror}; free space or fix the folder and run again "
            "(with --resume once the run has a checkpoint)"
        ) from None


def read_jsonl(path: Path, *, torn_tail: bool = True) -> tuple[list[dict[str, Any]], str | None]:
    """The objects of a JSON-lines file, and a note when its last line was torn (a crash mid-write:
    invalid JSON and no final newline), which is dropped if `torn_tail` (logs), an error if not
    (files that are scored). Any other bad line is an error naming the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read {path}: {exc}") from None
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    note = None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_int=_parse_int)
        except json.JSONDecodeError as exc:
            if torn_tail and n == len(lines):  # the last line has no newline after it: a write cut short
                note = f"{path}, line {n}: an incomplete last line (a write cut short) was dropped"
                break
            raise DecembertError(f"{path}, line {n}, column {exc.colno}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise DecembertError(f"{path}, line {n}: JSON nested too deeply") from None
        except ValueError as exc:
            raise DecembertError(f"{path}, line {n}: {exc} is too large for any value here") from None
        if not isinstance(row, dict):
            raise DecembertError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows, note
