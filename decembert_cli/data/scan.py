"""The in-memory scan of a corpus in HowTo100M's layout: its usable videos as `VideoRecord`s.

`open_howto100m` reads every caption source and every feature header and returns one record per
usable video, counting in a `DataReport` what it skipped or fixed (or stopping under --strict).
The corpus index (`data.corpus_index`) runs `usable_video` over parts of the corpus, once, and
keeps the result; corpus plugins return records and `ClipTable.from_records` turns them into a table.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decembert_cli.config.schema import DataConfig
from decembert_cli.data.howto100m import BadVideo, VideoCaptions, clean_captions, open_captions
from decembert_cli.data.video_store import VideoStore, resolve
from decembert_cli.errors import DecembertError

CAPTION_FILES = ("caption.json", "raw_caption.json", "howto100m_captions.zip", "howto100m_captions")


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
                f"video {video_id}: {problem} "
                "(--strict stops at the first bad video; without it, such videos are skipped and counted)"
            )
        self.skipped[problem.kind] += 1
        self.examples.setdefault(problem.kind, f"{video_id}: {problem}")

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
        path = resolve(root, value)
        if not path.exists():
            raise DecembertError(f"data.captions: {path} not found")
        return path
    for name in CAPTION_FILES:
        if (root / name).exists():
            return root / name
    raise DecembertError(f"no captions in {root}: expected one of {', '.join(CAPTION_FILES)} (or set data.captions)")


def video_list(root: Path, value: str) -> set[str] | None:
    if not value:
        return None
    path = resolve(root, value)
    if not path.is_file():
        if value != DataConfig.videos_csv:
            raise DecembertError(f'data.videos_csv: {path} not found (set it to "" to use every captioned video)')
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            raise DecembertError(f"{path} line 1: no video_id column (header: {reader.fieldnames})")
        return {row["video_id"] for row in reader if row.get("video_id")}


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
    records: list[VideoRecord] = []
    for n, video_id in enumerate(ids):
        if progress is not None:
            progress(n, len(ids))
        report.videos_seen += 1
        try:
            records.append(usable_video(store, video_id, source.get(video_id), trim, config.min_clips, report))
        except BadVideo as problem:
            report.skip(video_id, problem)
    if progress is not None:
        progress(len(ids), len(ids))
    report.videos_used = len(records)
    if not records:
        raise DecembertError(f"no usable video in {store.root}: {dict(report.skipped) or 'no captioned videos'}")
    return records


def usable_video(
    store: VideoStore, video_id: str, lines: VideoCaptions, trim: bool, min_clips: int, report: DataReport
) -> VideoRecord:
    """The video's record: its captions cleaned (fixes counted in `report`) and cut to its features.
    Raises BadVideo when it has too few captions, unreadable features or (when used) no dense captions."""
    counts: Counter[str] = Counter()
    captions = clean_captions(lines, trim_rolling=trim, counts=counts)
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
