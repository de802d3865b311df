"""Stored features and dense captions of a downstream dataset's videos, read as pre-training reads them."""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decembert_cli.config import Count, Fraction, NonNegativeInt, Positive
from decembert_cli.data.corpus import check_streams, pick_dense_captions
from decembert_cli.data.densecap import read_dense_captions
from decembert_cli.data.howto100m import BadVideo, load_features
from decembert_cli.errors import DecembertError


@dataclass(frozen=True)
class VideoSettings:
    """The `task.*` keys every task has for its videos (paths relative to `root`)."""

    root: str = ""  # the dataset folder: annotation files, features and dense captions
    features_2d: str = "features/2d"  # {video_id}.npy 2D features, 1 per second
    features_3d: str = "features/3d"  # {video_id}.npy 3D features (rate from stream.json, else fps_3d)
    fps_3d: Positive = 1.5  # 3D features/s of folders without stream.json
    dense_captions: str = "dense_captions"  # paper .npy or our .json store per video; used when present, "" = none
    dense_interval: Positive = 2.0  # seconds between captioned frames of .npy files
    dense_per_frame: Count = 2  # dense captions taken per frame
    max_dense_captions: NonNegativeInt = 16  # at most this many dense captions per item
    train_fraction: Fraction = (
        1.0  # share of the training videos used (a fixed subset: the first by a hash of the id); low-resource runs
    )
    require_features: bool = False  # a training or validation video without features stops fine-tuning (finetune --strict); else its items are left out, with a note


def under(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def task_file(settings: VideoSettings, name: str) -> Path:
    """`name` (a file setting) under task.root; a clear error when task.root is not set."""
    if not settings.root:
        raise DecembertError(
            "task.root is not set: --set task.root=DIR (the folder with the annotation files and features)"
        )
    return under(Path(settings.root).expanduser(), name)


def fixed_share(video_ids: list[str] | set[str], fraction: float) -> set[str]:
    """The first ceil(fraction x n) of the distinct ids ordered by a hash: the same subset on every run
    and seed, and a smaller share is part of a larger one."""
    if not 0.0 < fraction <= 1.0:
        raise DecembertError(f"task.train_fraction = {fraction}: use a share in (0, 1]")
    ranked = sorted(set(video_ids), key=lambda v: hashlib.sha1(v.encode("utf-8")).hexdigest())
    return set(ranked[: math.ceil(round(fraction * len(ranked), 6))])  # (round: 0.07 x 100 is 7, not 8)


class VideoStore:
    """Features and dense captions by video id for one dataset."""

    def __init__(self, settings: VideoSettings, dims: tuple[int, int] | None = None) -> None:
        if not settings.root:
            raise DecembertError(
                "task.root is not set: --set task.root=DIR (the folder with the annotation files and features)"
            )
        self.root = Path(settings.root).expanduser()
        if not self.root.is_dir():
            raise DecembertError(f"task.root: folder {self.root} not found")
        self.settings = settings
        self.dir_2d = under(self.root, settings.features_2d)
        self.dir_3d = under(self.root, settings.features_3d)
        self.dense_dir = under(self.root, settings.dense_captions) if settings.dense_captions else None
        self.dims = dims
        self.fps_3d = settings.fps_3d
        if dims is not None and self.dir_2d.is_dir() and self.dir_3d.is_dir():
            self.fps_3d = check_streams(self.dir_2d, self.dir_3d, dims, settings.fps_3d)

    def has_features(self, video_id: str) -> bool:
        return (self.dir_2d / f"{video_id}.npy").is_file() and (self.dir_3d / f"{video_id}.npy").is_file()

    def training_videos(self, video_ids: list[str], split: str) -> set[str]:
        """The videos fine-tuning reads of `split` (scored as training: targets, negatives): those with
        features, and of the train split only `train_fraction` of them (validation is never cut)."""
        distinct = list(dict.fromkeys(video_ids))
        usable = [v for v in distinct if self.has_features(v)]
        if len(usable) < len(distinct):
            have = set(usable)
            lacking = [v for v in distinct if v not in have]
            message = f"{split} split: {len(lacking)} of {len(distinct)} videos lack features in {self.dir_2d} or {self.dir_3d} (first: {lacking[0]})"
            if self.settings.require_features:
                raise DecembertError(f"{message}; extract them (decembert extract-features) or run without --strict")
            print(f"note: {message}; their items are left out", file=sys.stderr)
        return fixed_share(usable, self.settings.train_fraction) if split == "train" else set(usable)

    def dense_file(self, video_id: str) -> Path | None:
        if self.dense_dir is None:
            return None
        return next(
            (p for p in (self.dense_dir / f"{video_id}.json", self.dense_dir / f"{video_id}.npy") if p.is_file()), None
        )

    def features(self, video_id: str, window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(T, D2), (T, D3) float32 on the 1 s grid, for seconds [floor(start), ceil(end)) of `window`."""
        if self.dims is None:
            raise DecembertError("VideoStore was opened without the model's feature widths")
        grid = None if window is None else (math.floor(window[0]), max(math.floor(window[0]) + 1, math.ceil(window[1])))
        try:
            return load_features(
                self.dir_2d / f"{video_id}.npy",
                self.dir_3d / f"{video_id}.npy",
                dim_2d=self.dims[0],
                dim_3d=self.dims[1],
                fps_3d=self.fps_3d,
                window=grid,
            )
        except BadVideo as exc:
            raise DecembertError(f"video {video_id} ({self.dir_2d}): {exc}") from None

    def dense(self, video_id: str, window: tuple[float, float] | None, rng: np.random.Generator | None) -> list[str]:
        """Dense captions of the frames in `window` (all the video when None), as pre-training picks them."""
        path = self.dense_file(video_id)
        if path is None:
            return []
        try:
            frames, interval = read_dense_captions(path, self.settings.dense_interval)
        except BadVideo as exc:
            raise DecembertError(f"video {video_id}: {exc}") from None
        span = window if window is not None else (0.0, len(frames) * interval)
        s = self.settings
        return pick_dense_captions(frames, interval, span, s.dense_per_frame, s.max_dense_captions, rng)
