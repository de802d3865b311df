"""The video store: the one reader of a video's stored feature streams and dense captions.

Pre-training (`data.*` keys), the first-party tasks and third-party plugins (`task.*` keys) all
read videos through `VideoStore`, configured by the same `VideoSettings` fields
(`decembert_cli.config.VideoSettings`):

- features: `{video_id}.npy` in `features_2d` (1 per second) and `features_3d` (at the rate of the
  folder's stream.json, else `fps_3d`), read on the 1 s grid, only the rows of the window asked for;
- dense captions: `{video_id}.json` (our store) or `.npy` (the paper's layout) in `dense_captions`;
  of the frames inside a window, `dense_per_frame` per frame and at most `max_dense_captions` in all.

Errors: `features()` and `dense()` raise a `DecembertError` naming the video and the folder (a task
stops with it); `read_features()` and `read_dense()` raise `BadVideo`, which pre-training counts
and skips.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decembert_cli.config.schema import TaskSettings, VideoSettings
from decembert_cli.data.batch import uniform_indices
from decembert_cli.data.densecap import read_dense_captions
from decembert_cli.data.feature_store import read_stream_meta
from decembert_cli.data.howto100m import BadVideo, feature_seconds, load_features
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.errors import DecembertError


def expand_user(value: str, key: str) -> Path:
    """A path setting with a leading ~ or ~user expanded; an unknown user (or no home) is one error naming `key`."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        home = value.split("/", 1)[0]
        raise DecembertError(
            f"{key}: {home} in {value!r} is no user's home folder on this machine; give the full path"
        ) from None


def resolve(root: Path, value: str, key: str = "a path setting") -> Path:
    """A path setting (named `key` in errors): `value` itself when absolute (after ~), else under `root`."""
    path = expand_user(value, key)
    return path if path.is_absolute() else root / path


def dataset_file(settings: VideoSettings, name: str, section: str = "task") -> Path:
    """`name` (a file setting) under the settings' root; a clear error when the root is not set."""
    return resolve(_root(settings, section), name)


def _root(settings: VideoSettings, section: str) -> Path:
    if not settings.root:
        raise DecembertError(
            f"{section}.root is not set: --set {section}.root=DIR (the folder with the annotation files and features)"
        )
    return expand_user(settings.root, f"{section}.root")


def check_streams(dir_2d: Path, dir_3d: Path, dims: tuple[int, int], fps_3d: float) -> float:
    """The 3D rate to read with: from the folders' stream.json (our feature store), else `fps_3d`.

    Also checks what the stream files promise against the model before any video is read."""
    rate_3d = fps_3d
    streams = ((dir_2d, dims[0], "feature_dim_2d", "2d"), (dir_3d, dims[1], "feature_dim_3d", "3d"))
    for folder, dim, key, stream in streams:
        meta = read_stream_meta(folder)  # (rate and dim checked there)
        if meta is None:
            continue
        if meta["dim"] != dim:
            raise DecembertError(
                f"{folder}/stream.json: the {stream.upper()} features are {meta['dim']}-d ({meta.get('backbone')}), "
                f"the model expects {dim}; set --set model.{key}={meta['dim']}"
            )
        if stream == "2d" and meta["rate"] != 1.0:
            raise DecembertError(
                f"{folder}/stream.json: 2D features at {meta['rate']:g}/s; pre-training reads them at 1/s"
            )
        if stream == "3d":
            rate_3d = meta["rate"]
    return rate_3d


def pick_dense_captions(
    frames: list[list[str]],
    interval: float,
    window: tuple[float, float],
    per_frame: int,
    most: int,
    rng: np.random.Generator | None,
) -> list[str]:
    """Dense captions of the frames inside `window` (seconds): `per_frame` of each frame, at most `most` in all,
    as `pick_dense` chooses them."""
    return [frames[f][c] for f, c in pick_dense([len(f) for f in frames], interval, window, per_frame, most, rng)]


def pick_dense(
    sizes: Sequence[int] | np.ndarray,
    interval: float,
    window: tuple[float, float],
    per_frame: int,
    most: int,
    rng: np.random.Generator | None,
) -> list[tuple[int, int]]:
    """(frame, caption) of the dense captions picked inside `window` (seconds), for frames of `sizes` captions
    every `interval` seconds: `per_frame` of each frame, at most `most` in all.

    Frames are sub-sampled uniformly when there are more than most // per_frame; a window between
    two frames takes the frame before it. `rng` picks each frame's captions at random (training);
    None takes each frame's first ones (evaluation: deterministic). The one rule of both readers: the
    files (`pick_dense_captions`) and the corpus index's columns (`clip_table.DenseColumns`).
    """
    if not len(sizes) or per_frame <= 0 or most <= 0:
        return []
    first = math.ceil(window[0] / interval)
    stop = min(len(sizes), math.ceil(window[1] / interval))
    chosen = list(range(first, stop)) or [min(int(window[0] // interval), len(sizes) - 1)]
    chosen = [chosen[j] for j in uniform_indices(len(chosen), max(1, most // per_frame)).tolist()]
    picked: list[tuple[int, int]] = []
    for f in chosen:
        size = int(sizes[f])
        take = min(per_frame, size)
        if rng is None:
            picks = list(range(take))
        else:
            picks = sorted(rng.choice(size, size=take, replace=False).tolist()) if take else []
        picked += [(f, p) for p in picks]
    return picked[:most]


def fixed_share(video_ids: list[str] | set[str], fraction: float) -> set[str]:
    """The first ceil(fraction x n) of the distinct ids ordered by a hash: the same subset on every run
    and seed, and a smaller share is part of a larger one."""
    if not 0.0 < fraction <= 1.0:
        raise DecembertError(f"task.train_fraction = {fraction}: use a share in (0, 1]")
    ranked = sorted(set(video_ids), key=lambda v: hashlib.sha1(v.encode("utf-8")).hexdigest())
    return set(ranked[: math.ceil(round(fraction * len(ranked), 6))])  # (round: 0.07 x 100 is 7, not 8)


class VideoStore:
    """Features and dense captions by video id, for one dataset folder (`settings.root`).

    `dims` are the (2D, 3D) feature widths the model expects: needed to read features, and checked
    against the folders' stream.json. `section` names the settings in messages (`task` or `data`).
    """

    def __init__(self, settings: VideoSettings, dims: tuple[int, int] | None = None, *, section: str = "task") -> None:
        self.root = _root(settings, section)
        if not self.root.is_dir():
            if self.root.exists():
                raise DecembertError(f"{section}.root: {self.root} is a file, not a folder; give the data's folder")
            raise DecembertError(f"{section}.root: folder {self.root} not found")
        self.settings = settings
        self.section = section
        self.dir_2d = resolve(self.root, settings.features_2d, f"{section}.features_2d")
        self.dir_3d = resolve(self.root, settings.features_3d, f"{section}.features_3d")
        use_dense = settings.use_dense and bool(settings.dense_captions)
        self.dense_dir = resolve(self.root, settings.dense_captions, f"{section}.dense_captions") if use_dense else None
        self.dims = dims
        self.fps_3d = settings.fps_3d
        if dims is not None and self.dir_2d.is_dir() and self.dir_3d.is_dir():
            self.fps_3d = check_streams(self.dir_2d, self.dir_3d, dims, settings.fps_3d)

    def require_folders(self) -> None:
        """Every folder the settings name exists (pre-training reads no video without them)."""
        folders = [("features_2d", self.dir_2d), ("features_3d", self.dir_3d), ("dense_captions", self.dense_dir)]
        for key, folder in folders:
            if folder is not None and not folder.is_dir():
                raise DecembertError(f"{self.section}.{key}: folder {folder} not found")

    def feature_files(self, video_id: str) -> tuple[Path, Path]:
        return self.dir_2d / f"{video_id}.npy", self.dir_3d / f"{video_id}.npy"

    def has_features(self, video_id: str) -> bool:
        return all(path.is_file() for path in self.feature_files(video_id))

    def dense_file(self, video_id: str) -> Path | None:
        """The video's dense-caption file, None when there is none (or dense captions are off)."""
        if self.dense_dir is None:
            return None
        candidates = (self.dense_dir / f"{video_id}.json", self.dense_dir / f"{video_id}.npy")
        return next((p for p in candidates if p.is_file()), None)

    def _widths(self) -> tuple[int, int]:
        if self.dims is None:
            raise DecembertError("VideoStore was opened without the model's feature widths")
        return self.dims

    def seconds(self, video_id: str) -> int:
        """Length of the video's 1 s feature grid, from the file headers only. Raises BadVideo."""
        (dim_2d, dim_3d), (path_2d, path_3d) = self._widths(), self.feature_files(video_id)
        return feature_seconds(path_2d, path_3d, dim_2d=dim_2d, dim_3d=dim_3d, fps_3d=self.fps_3d)

    def read_features(self, video_id: str, window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(T, D2), (T, D3) float32 on the 1 s grid, for seconds [floor(start), ceil(end)) of `window`
        (at least one; all the video when None). Raises BadVideo."""
        dim_2d, dim_3d = self._widths()
        grid = None
        if window is not None:
            first = math.floor(window[0])
            grid = (first, max(first + 1, math.ceil(window[1])))
        path_2d, path_3d = self.feature_files(video_id)
        return load_features(path_2d, path_3d, dim_2d=dim_2d, dim_3d=dim_3d, fps_3d=self.fps_3d, window=grid)

    def features(self, video_id: str, window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`read_features`, with a problem raised as a DecembertError naming the video and folder."""
        try:
            return self.read_features(video_id, window)
        except BadVideo as exc:
            raise DecembertError(f"video {video_id} ({self.dir_2d}): {exc}") from None

    def read_dense(
        self, video_id: str, window: tuple[float, float] | None, rng: np.random.Generator | None
    ) -> list[str]:
        """Dense captions of the frames in `window` (all the video when None), picked as `pick_dense_captions`
        does; [] when the video has none. Raises BadVideo for an unreadable file."""
        path = self.dense_file(video_id)
        if path is None:
            return []
        s = self.settings
        frames, interval = read_dense_captions(path, s.dense_interval)
        span = window if window is not None else (0.0, len(frames) * interval)
        return pick_dense_captions(frames, interval, span, s.dense_per_frame, s.max_dense_captions, rng)

    def dense(self, video_id: str, window: tuple[float, float] | None, rng: np.random.Generator | None) -> list[str]:
        """`read_dense`, with a problem raised as a DecembertError naming the video."""
        try:
            return self.read_dense(video_id, window, rng)
        except BadVideo as exc:
            raise DecembertError(f"video {video_id}: {exc}") from None

    def dense_tokens(
        self, tokenizer: Any, video_id: str, window: tuple[float, float] | None, rng: np.random.Generator | None
    ) -> list[list[int]]:
        """`dense()` tokenised: one list of WordPiece ids per caption, at most `dense_caption_tokens` each."""
        return tokenize_captions(tokenizer, self.dense(video_id, window, rng), self.settings.dense_caption_tokens)

    def training_videos(self, video_ids: list[str], split: str) -> set[str]:
        """The videos fine-tuning reads of `split` (scored as training: targets, negatives): those with
        features, and of the train split only `train_fraction` of them (validation is never cut)."""
        assert isinstance(self.settings, TaskSettings), "training_videos needs a task's settings"
        distinct = list(dict.fromkeys(video_ids))
        usable = [v for v in distinct if self.has_features(v)]
        if len(usable) < len(distinct):
            have = set(usable)
            lacking = [v for v in distinct if v not in have]
            message = (
                f"{split} split: {len(lacking)} of {len(distinct)} videos lack features in {self.dir_2d} or "
                f"{self.dir_3d} (first: {lacking[0]})"
            )
            if self.settings.require_features:
                raise DecembertError(f"{message}; extract them (decembert extract-features) or run without --strict")
            print(f"note: {message}; their items are left out", file=sys.stderr)
        return fixed_share(usable, self.settings.train_fraction) if split == "train" else set(usable)
