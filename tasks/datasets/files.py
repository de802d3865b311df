"""JSON and CSV reading whose errors name the file and the line or record, and the fix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from decembert_cli.errors import DecembertError
from decembert_cli.io import decode_json


def _text(path: Path, encoding: str) -> str:
    try:
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
    for row in reader:
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
