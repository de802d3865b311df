"""HowTo100M as its users have it: ASR captions in both official forms and per-video feature files.

Captions (DATA_FORMATS.md):
- `caption.json` / `raw_caption.json`: {video_id: {"start": [..], "end": [..], "text": [..]}}
- `howto100m_captions.zip` or its extracted folder: one `{video_id}.csv` per video, header start,end,text
  (UTF-8, a leading BOM allowed)

Features: one `.npy` per video and stream, shape (T, 2048); 2D at 1 feature/s, 3D at 1.5 features/s
(16-frame clips at 24 fps), resampled here onto the 1 s grid (3D index = floor(t * 24 / 16)).

Problems with one video raise `BadVideo` with a reason; the corpus skips and counts them (or stops
under --strict). Nothing is ever replaced by zeros.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import lzma
import math
import re
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from decembert_cli.errors import DecembertError
from decembert_cli.io import scan_json_object

FPS_3D = 24 / 16  # HowTo100M 3D features: one per 16 frames at 24 fps


class BadVideo(Exception):
    """One video cannot be used; `str(exc)` says why, `kind` is the category counted in the run's summary."""

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind or reason


@dataclass
class VideoCaptions:
    """A video's ASR captions (HowTo100M's caption.json layout): parallel lists of start, end and text."""

    video_id: str
    start: list[float]  # seconds
    end: list[float]  # seconds
    text: list[str]

    def __len__(self) -> int:
        return len(self.text)


class CaptionSource(Protocol):
    """Where a corpus' ASR captions come from: the ids it captions, and a video's captions (any order; they
    are cleaned and sorted by `usable_video`)."""

    def ids(self) -> list[str]: ...

    def get(self, video_id: str) -> VideoCaptions: ...


def _as_list(value: object, name: str) -> list:
    if not isinstance(value, list):
        raise BadVideo(f"'{name}' is not a list", "malformed caption entry")
    return value


class JsonCaptions:
    """`caption.json` / `raw_caption.json`: one JSON object over all videos (HowTo100M's: 1.22M videos, ~136M
    lines), streamed. Opening scans the file once (`io.scan_json_object`: every value parsed and checked, a
    syntax error is one error naming the line) and keeps only where each video's entry lies (sorted ids, byte
    offsets and lengths: ~40 bytes a video); `get` reads and parses that one entry. Memory is bounded by the
    largest entry, never the file, and forked workers share the offsets. An id given twice keeps its last
    entry, as a JSON object does."""

    def __init__(self, path: Path) -> None:
        found: dict[str, tuple[int, int]] = {}
        for video_id, offset, length in scan_json_object(path, shape="{video_id: {start, end, text}}"):
            found[video_id] = (offset, length)
        self.path = path
        self._ids = sorted(found)
        spans = np.array([found[v] for v in self._ids], dtype=np.int64).reshape(-1, 2)
        del found
        self._offsets, self._lengths = spans[:, 0].copy(), spans[:, 1].copy()

    def ids(self) -> list[str]:
        return self._ids

    def get(self, video_id: str) -> VideoCaptions:
        k = bisect.bisect_left(self._ids, video_id)
        if k == len(self._ids) or self._ids[k] != video_id:
            raise BadVideo("no caption entry", "malformed caption entry")
        try:
            with open(self.path, "rb") as handle:
                handle.seek(int(self._offsets[k]))
                data = handle.read(int(self._lengths[k]))
            entry = json.loads(data)
        except (OSError, ValueError, RecursionError) as exc:  # the file changed since it was scanned
            raise DecembertError(
                f"{self.path} changed while it was read ({type(exc).__name__} at byte {int(self._offsets[k])}); "
                "run the command again"
            ) from None
        if not isinstance(entry, dict):
            raise BadVideo("caption entry is not an object", "malformed caption entry")
        missing = [k for k in ("start", "end", "text") if k not in entry]
        if missing:
            raise BadVideo(f"caption entry lacks {', '.join(missing)}", "malformed caption entry")
        return VideoCaptions(
            video_id, _as_list(entry["start"], "start"), _as_list(entry["end"], "end"), _as_list(entry["text"], "text")
        )


def _parse_csv(data: bytes, where: str, video_id: str) -> VideoCaptions:
    """One caption CSV, from its bytes: UTF-8 (a leading BOM, as spreadsheet tools write it, is dropped), header
    start,end,text. Not UTF-8, or a line the csv module refuses (a field over its 128 KiB limit: no caption
    is that long), and the video is skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadVideo(
            f"{where} line {line}: not UTF-8 (byte {data[exc.start]:#04x}); save it as UTF-8",
            "caption file not in UTF-8",
        ) from None
    reader = csv.reader(io.StringIO(text))
    # the times as read (strings): clean_captions checks and converts them, as it does JSON's values
    start: list[Any] = []
    end: list[Any] = []
    texts: list[str] = []
    try:
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["start", "end", "text"]:
            raise BadVideo(f"{where}: header is {header!r}, expected start,end,text", "malformed caption file")
        for row in reader:
            if not row:
                continue
            if len(row) < 2:
                raise BadVideo(f"{where} line {reader.line_num}: expected start,end,text", "malformed caption file")
            start.append(row[0])
            end.append(row[1])
            texts.append(",".join(row[2:]))  # an unquoted comma in the text
    except csv.Error as exc:
        raise BadVideo(f"{where} line {reader.line_num}: {exc}", "malformed caption file") from None
    return VideoCaptions(video_id, start, end, texts)


class CsvFolderCaptions:
    """The extracted `howto100m_captions` folder: `{video_id}.csv` per video, read on demand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ids = sorted(p.stem for p in folder.glob("*.csv"))
        if not self._ids:
            raise DecembertError(f"{folder} holds no .csv caption files; expected one {{video_id}}.csv per video")

    def ids(self) -> list[str]:
        return self._ids

    def get(self, video_id: str) -> VideoCaptions:
        path = self.folder / f"{video_id}.csv"
        try:
            if not path.is_file():  # a pipe would block the read forever
                raise BadVideo(f"{path.name} is not a regular file", "caption file unreadable")
            data = path.read_bytes()
        except OSError as exc:
            raise BadVideo(f"cannot read {path.name}: {exc.strerror}", "caption file unreadable") from None
        return _parse_csv(data, path.name, video_id)


# What ZipFile.read raises for one bad member: damaged data (CRC, zlib, bz2 as OSError, lzma, cut short),
# encrypted (RuntimeError: a password is needed), an unknown compression method (NotImplementedError)
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


class ZipCaptions:
    """`howto100m_captions.zip` read in place (no extraction)."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise DecembertError(f"{path}: not a readable zip file ({exc})") from None
        self._members = {Path(n).stem: n for n in self._zip.namelist() if n.endswith(".csv")}
        if not self._members:
            raise DecembertError(f"{path} holds no .csv caption files")
        self.path = path

    def ids(self) -> list[str]:
        return sorted(self._members)

    def get(self, video_id: str) -> VideoCaptions:
        name = self._members.get(video_id)
        if name is None:
            raise BadVideo("no caption file", "no captions")
        try:
            data = self._zip.read(name)
        except _MEMBER_ERRORS as exc:  # e.g. encrypted, or a compression method this Python lacks
            raise BadVideo(f"cannot read {name} from the zip: {exc}", "caption file unreadable") from None
        return _parse_csv(data, name, video_id)


def open_captions(path: str | Path) -> CaptionSource:
    """caption.json / raw_caption.json, a folder of per-video CSVs, or howto100m_captions.zip."""
    path = Path(path)
    if path.is_dir():
        return CsvFolderCaptions(path)
    if path.suffix == ".json" and path.is_file():
        return JsonCaptions(path)
    if path.suffix == ".zip" and path.is_file():
        return ZipCaptions(path)
    raise DecembertError(
        f"captions not found at {path}: give caption.json, raw_caption.json, howto100m_captions.zip "
        "or a folder of {video_id}.csv files"
    )


_SPACES = re.compile(r"\s+")


def has_word(text: str) -> bool:
    """True if `text` has a letter or digit (any script) once decomposed and stripped of accents, as
    BERT's basic tokenizer reads it: "córdoba" and "½" do, "♪ ♪" and "..." do not."""
    return any(unicodedata.category(c)[0] in "LN" for c in unicodedata.normalize("NFD", text))


def collapse_spaces(text: str) -> str:
    """Runs of white space become one space; ends stripped."""
    return _SPACES.sub(" ", text).strip()


def _seconds(values: list, name: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise BadVideo(f"{name}[{i}] = {v!r} is not a number", "caption time not a number") from None
        if not math.isfinite(x) or x < 0:
            raise BadVideo(f"{name}[{i}] = {v!r} is not a time in seconds", "caption time not a number")
        out.append(x)
    return out


def trim_overlap(previous: str, current: str) -> str:
    """Drop from `current` the longest word prefix that repeats a suffix of `previous` (rolling ASR)."""
    prev_words, cur_words = previous.split(), current.split()
    lowered_prev = [w.lower() for w in prev_words]
    lowered_cur = [w.lower() for w in cur_words]
    for k in range(min(len(prev_words), len(cur_words)), 0, -1):
        if lowered_prev[-k:] == lowered_cur[:k]:
            return " ".join(cur_words[k:])
    return current


def clean_captions(raw: VideoCaptions, *, trim_rolling: bool, counts: Counter[str] | None = None) -> VideoCaptions:
    """Validate and normalise one video's captions.

    Unequal list lengths and non-numeric times raise BadVideo. Texts become stripped strings
    (numbers included), lines are sorted by start, overlap with the previous line is trimmed when
    `trim_rolling` (raw ASR), and lines without a word are dropped: empty, or without a letter or
    digit once accents are stripped as BERT's tokenizer strips them (`has_word`), since those
    become only [UNK] or punctuation. Accented and other non-ASCII words are kept ("fjällräven",
    "½ inch"). A line ending before it starts ends at its start. An exact repeat of a line (same
    start, end and text) is dropped: it is one utterance, not two clips (README, `decembert pretrain`). Every fix is
    added to `counts`.
    """
    n = (len(raw.start), len(raw.end), len(raw.text))
    if len(set(n)) != 1:
        raise BadVideo(
            f"caption lists of unequal length (start {n[0]}, end {n[1]}, text {n[2]})",
            "caption lists of unequal length",
        )
    start, end = _seconds(raw.start, "start"), _seconds(raw.end, "end")
    texts = [collapse_spaces("" if t is None else str(t)) for t in raw.text]
    counts = Counter() if counts is None else counts
    order = sorted(range(len(texts)), key=lambda i: (start[i], end[i]))
    if order != sorted(order):
        counts["videos with unsorted caption starts (sorted)"] += 1
    kept_start, kept_end, kept_text = [], [], []
    previous = ""
    seen: set[tuple[float, float, str]] = set()
    for i in order:
        if not texts[i]:
            counts["empty caption lines (dropped)"] += 1
            continue
        if not has_word(texts[i]):
            counts["caption lines without a letter or digit (dropped)"] += 1
            continue
        # An exact repeat is one utterance: the paper's code (which reads lines as they are) would make it a
        # second, identical clip and its own neighbour among the ASR candidates. Real files hold none (60
        # official caption CSVs, kept in antoine77340/MIL-NCE_HowTo100M: 0 in 5,950 lines), so dropping
        # it changes nothing there. A text repeated at another time (15 such lines there) is a second
        # utterance and stays.
        if (start[i], end[i], texts[i]) in seen:
            counts["duplicate caption lines (dropped)"] += 1
            continue
        seen.add((start[i], end[i], texts[i]))
        text = trim_overlap(previous, texts[i]) if trim_rolling and previous else texts[i]
        previous = texts[i]
        if not text:
            continue
        if end[i] < start[i]:
            counts["caption lines ending before they start (end set to start)"] += 1
        kept_start.append(start[i])
        kept_end.append(max(end[i], start[i]))
        kept_text.append(text)
    return VideoCaptions(raw.video_id, kept_start, kept_end, kept_text)


def load_stream(path: Path, expected_dim: int | None, stream: str) -> np.ndarray:
    """One stream's (T > 0, expected_dim) array of numbers, memory-mapped (any width when `expected_dim`
    is None); BadVideo says what is wrong with the file."""
    if not path.is_file():
        raise BadVideo(f"{stream} feature file missing ({path.name})", f"{stream} feature file missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadVideo(
            f"{stream} feature file unreadable or truncated ({path.name}: {exc})",
            f"{stream} feature file unreadable or truncated",
        ) from None
    if array.dtype.kind not in "fiu":  # strings, booleans, records: no float32 row comes of them
        raise BadVideo(
            f"{stream} features in {path.name} are not numbers (dtype {array.dtype})",
            f"{stream} features not numbers",
        )
    if array.ndim != 2 or array.shape[0] == 0:
        raise BadVideo(
            f"{stream} features have shape {array.shape}, expected (T > 0, {expected_dim or 'D'})",
            f"{stream} features of the wrong shape",
        )
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise BadVideo(
            f"{stream} features are {array.shape[1]} wide, "
            f"expected {expected_dim} (model.feature_dim_{stream.lower()})",
            f"{stream} features of the wrong width",
        )
    return array


def feature_seconds(
    path_2d: Path, path_3d: Path, *, dim_2d: int = 2048, dim_3d: int = 2048, fps_3d: float = FPS_3D
) -> int:
    """Seconds T on the 1 s grid that both streams of one video cover; checks the files' headers only."""
    f2 = load_stream(path_2d, dim_2d, "2D")
    f3 = load_stream(path_3d, dim_3d, "3D")
    return min(f2.shape[0], int(math.floor((f3.shape[0] - 1) / fps_3d)) + 1)


def load_features(
    path_2d: Path,
    path_3d: Path,
    *,
    dim_2d: int = 2048,
    dim_3d: int = 2048,
    fps_3d: float = FPS_3D,
    window: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both streams of one video on the 1 s grid: (T, dim_2d) and (T, dim_3d), float32.

    T covers the seconds that both streams reach; the 3D stream at `fps_3d` features/s is
    resampled by index floor(t * fps_3d). `window` = (first second, end second) reads only those
    rows (memory-mapped), clamped to T.
    """
    f2 = load_stream(path_2d, dim_2d, "2D")
    f3 = load_stream(path_3d, dim_3d, "3D")
    seconds = min(f2.shape[0], int(math.floor((f3.shape[0] - 1) / fps_3d)) + 1)
    first, stop = (0, seconds) if window is None else (max(0, window[0]), min(seconds, window[1]))
    if stop <= first:
        raise BadVideo(f"window {window} lies outside the {seconds} s of features", "clip outside the features")
    idx = np.minimum(np.floor(np.arange(first, stop) * fps_3d).astype(np.int64), f3.shape[0] - 1)
    out2 = np.asarray(f2[first:stop], dtype=np.float32)
    out3 = np.asarray(f3[idx], dtype=np.float32)
    if not (np.isfinite(out2).all() and np.isfinite(out3).all()):
        raise BadVideo("features contain NaN or infinite values", "NaN or infinite features")
    return out2, out3
