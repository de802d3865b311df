"""JSON and CSV reading whose errors name the file and the line or record, and the fix; the ids they give
are names, never paths (`usable_ids`)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from decembert_cli.errors import DecembertError
from decembert_cli.io import decode_json, regular_file, safe_id


def _text(path: Path, encoding: str) -> str:
    try:
        if path.exists():
            regular_file(path, "annotation file")  # a pipe would block
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise DecembertError(
            f"{path} not found; check the task's data settings (decembert data check shows what is found)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read {path} ({exc})") from None


def read_json(path: Path) -> Any:
    path = Path(path)
    return decode_json(_text(path, "utf-8"), str(path))


def read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; the header must hold `columns` (others are ignored)."""
    path = Path(path)
    text = _text(path, "utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    missing = [c for c in columns if header is None or c not in header]
    if missing:
        raise DecembertError(f"{path}, line 1: the header needs the column(s) {', '.join(missing)}; it has {header}")
    if header is None:  # an empty file, and no column asked for
        return []
    rows = []
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(), a NUL byte
            raise DecembertError(f"{path}, line {reader.line_num + 1}: not CSV this reader can use ({exc})") from None
        if row is None:
            break
        if not row or all(not cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise DecembertError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
        rows.append((line, dict(zip(header, row))))
    return rows


def record_error(path: Path, index: int, what: str, record: Any = None) -> DecembertError:
    """An error about record `index` (0-based) of a JSON list or mapping."""
    shown = f": {json.dumps(record)[:120]}" if record is not None else ""
    return DecembertError(f"{path}, record {index}: {what}{shown}")


def usable_ids(path: Path, ids: Iterable[str]) -> set[str]:
    """The ids of `ids` that can name files (`decembert_cli.io.safe_id`); the others are left out with one
    note naming the file, how many and the first."""
    given = list(dict.fromkeys(ids))
    unsafe = [i for i in given if not safe_id(i)]
    if unsafe:
        print(
            f"note: {path}: {len(unsafe)} video id(s) left out: not usable as file names "
            f"(the first: {unsafe[0][:80]!r}); ids are names, never paths",
            file=sys.stderr,
        )
    return set(given) - set(unsafe)
