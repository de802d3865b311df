"""The in-memory scan of a corpus in HowTo100M's layout: its usable videos as `VideoRecord`s.

`open_howto100m` reads every caption source and every feature header and returns one record per
usable video, counting in a `DataReport` what it skipped or fixed (or stopping under --strict).
The corpus index (`data.corpus_index`) runs `usable_video` over parts of the corpus, once, and
keeps the result; corpus plugins return records and `ClipTable.from_records` turns them into a table.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decembert_cli.config.schema import DataConfig
from decembert_cli.data.howto100m import BadVideo, CaptionSource, VideoCaptions, clean_captions, open_captions
from decembert_cli.data.video_store import VideoStore, resolve
from decembert_cli.errors import DecembertError
from decembert_cli.io import MAX_ID_BYTES, safe_id

CAPTION_FILES = ("caption.json", "raw_caption.json", "howto100m_captions.zip", "howto100m_captions")
UNSAFE_ID = "unsafe video id"  # the kind counted for an id that is no file name (a path, hidden, too long)


def shown_id(video_id: str) -> str:
    """A video id as a report or an error shows it: as it is when safe, else quoted with its control
    characters escaped and cut to 60 characters (an id from a file is any string)."""
    if safe_id(video_id):
        return video_id
    return repr(video_id) if len(video_id) <= 60 else f"{video_id[:50]!r}... ({len(video_id)} characters)"


@dataclass
class VideoRecord:
    """One usable video. Corpus plugins may subclass it to read features or dense captions differently."""

    video_id: str
    captions: VideoCaptions  # cleaned: sorted, non-empty, within the features
    seconds: int  # length of the 1 s feature grid
    store: VideoStore  # where its features and dense captions are
    aligned_to: list[int] | None = None  # per caption: index of the clip it truly describes (-1: none); sample corpus

    def features(self, window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, dim) float32 arrays of both streams for window = (first second, end second). Raises BadVideo."""
        return self.store.read_features(self.video_id, window)

    def dense_captions(self, window: tuple[int, int], rng: np.random.Generator | None) -> list[str]:
        """The dense captions of the frames in `window`, picked as the store does. Raises BadVideo."""
        return self.store.read_dense(self.video_id, window, rng)


@dataclass
class DataReport:
    """What a corpus skipped or fixed, counted by kind; with `strict`, the first problem is an error."""

    strict: bool = False
    videos_seen: int = 0
    videos_used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # kind -> videos skipped
    fixed: Counter[str] = field(default_factory=Counter)  # kind -> lines dropped / videos repaired
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first video id and its message

    def skip(self, video_id: str, problem: BadVideo) -> None:
        if self.strict:
            raise DecembertError(
                f"video {shown_id(video_id)}: {problem} "
                "(--strict stops at the first bad video; without it, such videos are skipped and counted)"
            )
        self.skipped[problem.kind] += 1
        self.examples.setdefault(problem.kind, f"{shown_id(video_id)}: {problem}")

    def fix(self, video_id: str, counts: Counter[str]) -> None:
        if counts and self.strict:
            kind = next(iter(counts))
            raise DecembertError(
                f"video {video_id}: {kind} "
                "(--strict stops at the first problem; without it, these are fixed and counted)"
            )
        for kind, n in counts.items():
            self.fixed[kind] += n
            self.examples.setdefault(kind, video_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "videos_seen": self.videos_seen,
            "videos_used": self.videos_used,
            "skipped": dict(self.skipped),
            "fixed": dict(self.fixed),
            "examples": self.examples,
        }


def captions_path(root: Path, value: str) -> Path:
    if value != "auto":
        path = resolve(root, value, "data.captions")
        if not path.exists():
            raise DecembertError(f"data.captions: {path} not found")
        return path
    for name in CAPTION_FILES:
        if (root / name).exists():
            return root / name
    raise DecembertError(f"no captions in {root}: expected one of {', '.join(CAPTION_FILES)} (or set data.captions)")


def video_list(root: Path, value: str) -> set[str] | None:
    """The ids of data.videos_csv (HowTo100M_v1.csv: a video_id column); None when not set, or when the
    default file is absent. UTF-8 with or without a BOM; a line the csv module refuses (a field over its
    128 KiB limit) or bytes that are not UTF-8 are one error naming the line."""
    if not value:
        return None
    path = resolve(root, value, "data.videos_csv")
    if not path.is_file():
        if value != DataConfig.videos_csv:
            raise DecembertError(f'data.videos_csv: {path} not found (set it to "" to use every captioned video)')
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecembertError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DecembertError(
            f"{path}, line {line}: not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        if "video_id" not in header:
            raise DecembertError(f"{path}, line 1: no video_id column (header: {header})")
        column = header.index("video_id")
        return {row[column] for row in reader if len(row) > column and row[column]}
    except csv.Error as exc:  # (line_num: the lines read, the bad one included)
        raise DecembertError(
            f"{path}, line {reader.line_num}: {exc}; fix or replace the file (data.videos_csv)"
        ) from None


def open_howto100m(
    config: DataConfig,
    report: DataReport,
    dims: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
) -> list[VideoRecord]:
    """HowTo100M as its users have it (DATA_FORMATS.md): captions, per-video features, dense captions."""
    store = VideoStore(config, dims, section="data")
    captions = captions_path(store.root, config.captions)
    source = open_captions(captions)
    raw = captions.name.startswith("raw_caption")
    trim = config.trim_overlap == "on" or (config.trim_overlap == "auto" and raw)
    wanted = video_list(store.root, config.videos_csv)
    store.require_folders()
    if config.min_clips < 1:
        raise DecembertError(f"data.min_clips must be at least 1, got {config.min_clips}")

    ids = [v for v in source.ids() if wanted is None or v in wanted]
    return usable_videos(store, ids, source, trim, config.min_clips, report, progress)


def usable_videos(
    store: VideoStore,
    ids: list[str],
    source: CaptionSource,
    trim: bool,
    min_clips: int,
    report: DataReport,
    progress: Callable[[int, int], None] | None = None,
) -> list[VideoRecord]:
    """`usable_video` for each id: the records of those that can be used, the others skipped in `report` (with
    the reason) and counted; one error when none is usable. What every corpus in this layout shares."""
    records: list[VideoRecord] = []
    for n, video_id in enumerate(ids):
        if progress is not None:
            progress(n, len(ids))
        report.videos_seen += 1
        try:
            records.append(usable_video(store, video_id, source, trim, min_clips, report))
        except BadVideo as problem:
            report.skip(video_id, problem)
    if progress is not None:
        progress(len(ids), len(ids))
    report.videos_used = len(records)
    if not records:
        raise DecembertError(f"no usable video in {store.root}: {dict(report.skipped) or 'no captioned videos'}")
    return records


def usable_video(
    store: VideoStore, video_id: str, source: CaptionSource, trim: bool, min_clips: int, report: DataReport
) -> VideoRecord:
    """The video's record: its captions from `source` cleaned (fixes counted in `report`) and cut to its
    features. Raises BadVideo when its id is no file name (ids are names, never paths: `io.safe_id`),
    it has too few captions, unreadable features or (when used) no dense captions."""
    if not safe_id(video_id):
        raise BadVideo(
            f"not a file name (a path, a hidden name, a control character or over {MAX_ID_BYTES} bytes); "
            "its files are never looked for",
            UNSAFE_ID,
        )
    counts: Counter[str] = Counter()
    captions = clean_captions(source.get(video_id), trim_rolling=trim, counts=counts)
    report.fix(video_id, counts)
    if len(captions) < min_clips:
        raise BadVideo(f"{len(captions)} usable captions, fewer than data.min_clips={min_clips}", "too few clips")
    seconds = store.seconds(video_id)
    inside = [i for i, s in enumerate(captions.start) if math.floor(s) < seconds]
    if len(inside) < len(captions):
        dropped = Counter({"caption lines after the end of the features (dropped)": len(captions) - len(inside)})
        report.fix(video_id, dropped)
        captions = VideoCaptions(
            video_id,
            [captions.start[i] for i in inside],
            [captions.end[i] for i in inside],
            [captions.text[i] for i in inside],
        )
        if len(captions) < min_clips:
            raise BadVideo(f"{len(captions)} captions fall within the {seconds} s of features", "too few clips")
    if store.dense_dir is not None and store.dense_file(video_id) is None:
        raise BadVideo(f"no dense captions ({video_id}.json or .npy) in {store.dense_dir}", "dense captions missing")
    return VideoRecord(video_id, captions, seconds, store)
