"""`decembert extract-features`: videos -> 2D + 3D features in the feature store.

Reader threads decode videos (OpenCV and PyAV release the GIL) and hand over chunks of resized
frames through a bounded queue, so decoding overlaps inference and memory stays bounded; the main
thread batches items across videos, runs both backbones (autocast on GPU) and writes each video
as soon as all its features are in. A video whose two .npy files exist is finished and skipped on
a rerun; a video that fails goes to failures.jsonl with its reason and the run goes on. Work is
split with `shard = (i, n)` (and torchrun's RANK / WORLD_SIZE on top), by position in the id-sorted
list, so any number of machines can share one input list and one output folder.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from decembert_cli.data.feature_store import LAYOUTS, write_features, write_stream_meta
from decembert_cli.data.video import (
    VIDEO_EXTENSIONS,
    Decoded,
    Grid,
    VideoError,
    clip_grid,
    consecutive_clip_grid,
    image_grid,
    open_video,
    sample,
)
from decembert_cli.engine.precision import autocast
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_bytes
from decembert_cli.features.backbones import Backbone, normalise_pixels

_UNSAFE_ID = re.compile(r"(^\.|[/\\\x00-\x1f]|^$)")
TRUNCATION_TOLERANCE = 0.9  # decoded duration below this share of the container's (minus 1 s) = truncated


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: Path


@dataclass(frozen=True)
class Failure:
    video_id: str
    path: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"video_id": self.video_id, "path": self.path, "kind": self.kind, "reason": self.reason}


@dataclass
class ExtractOptions:
    out: Path
    layout: str = "decembert"
    dtype: str = "float16"
    l2_normalise: bool = False
    batch_size: int = 32
    readers: int = 2
    decoder: str = "auto"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    autocast: torch.dtype | None = None  # bf16/fp16 autocast (GPU); None = fp32
    shard: tuple[int, int] = (0, 1)


@dataclass
class ExtractSummary:
    videos: int = 0  # in this shard
    already_done: int = 0
    extracted: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # of video extracted
    frames_decoded: int = 0
    wall_s: float = 0.0
    decode_s: float = 0.0  # summed over reader threads
    infer_s: float = 0.0
    ignored_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "videos": self.videos, "already_done": self.already_done, "extracted": self.extracted,
            "failed": dict(self.failed), "seconds_of_video": round(self.seconds, 3), "frames_decoded": self.frames_decoded,
            "wall_s": round(self.wall_s, 3), "decode_s": round(self.decode_s, 3), "infer_s": round(self.infer_s, 3),
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Inputs


def _safe_id(video_id: str) -> bool:
    return not _UNSAFE_ID.search(video_id) and ".." not in Path(video_id).parts


def _read_list(path: Path) -> list[tuple[str, Path]]:
    """A list file: one video path per line, or CSV rows `video_id,path` (a header row is allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read the video list {path} ({exc})") from None
    entries = []
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if line_no == 1 and [c.lower() for c in row[:2]] == ["video_id", "path"]:
            continue
        if len(row) == 1:
            p = Path(row[0]).expanduser()
            entries.append((p.stem, p if p.is_absolute() else path.parent / p))
        elif len(row) == 2:
            p = Path(row[1]).expanduser()
            entries.append((row[0], p if p.is_absolute() else path.parent / p))
        else:
            raise DecembertError(f"{path}, line {line_no}: expected `path` or `video_id,path`, got {len(row)} fields")
    return entries


def list_videos(inputs: Iterable[Path]) -> tuple[list[VideoJob], list[Failure], list[str]]:
    """(jobs sorted by id, failures of unusable entries, files ignored as not videos by extension).

    An input is a video file, a folder (its video files, recursively) or a list file (.txt/.csv).
    Ids are file stems unless the list names them; an id that could escape the output folder
    (`../x`, a leading dot, a slash) or that repeats is a failure, never a file.
    """
    entries: list[tuple[str, Path]] = []
    ignored: list[str] = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    entries.append((path.stem, path))
                elif not path.name.startswith("."):
                    ignored.append(str(path))
        elif item.suffix.lower() in (".txt", ".csv", ".lst") and item.is_file():
            entries.extend(_read_list(item))
        elif item.exists() or item.suffix.lower() in VIDEO_EXTENSIONS:
            entries.append((item.stem, item))
        else:
            raise DecembertError(f"{item} does not exist; pass video files, folders of videos or a list file (.txt/.csv)")
    jobs: dict[str, VideoJob] = {}
    failures = []
    for video_id, path in entries:
        if not _safe_id(video_id):
            failures.append(Failure(video_id, str(path), "unsafe id", f"video id {video_id!r} could write outside the output folder; rename it"))
        elif video_id in jobs:
            failures.append(Failure(video_id, str(path), "duplicate id", f"id {video_id!r} is also {jobs[video_id].path}; rename one of them"))
        else:
            jobs[video_id] = VideoJob(video_id, path)
    return [jobs[k] for k in sorted(jobs)], failures, ignored


def shard_of(jobs: list[VideoJob], shard: tuple[int, int]) -> list[VideoJob]:
    """Jobs of shard i of n: every n-th job of the id-sorted list, starting at i."""
    i, n = shard
    return jobs[i::n]


def grids_for(b2: Backbone, b3: Backbone, layout: str) -> list[Grid]:
    """The 2D grid (one frame per second) and the 3D grid of the layout."""
    if layout not in LAYOUTS:
        raise DecembertError(f"layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    g3 = clip_grid(b3.size, b3.frames, b3.fps) if layout == "decembert" else consecutive_clip_grid(b3.size, b3.frames, b3.fps)
    return [image_grid(b2.size), g3]


def stream_meta(backbone: Backbone, grid: Grid, options: ExtractOptions) -> dict[str, Any]:
    from decembert_cli import __version__

    return {
        "stream": backbone.stream,
        "layout": options.layout,
        "rate": grid.rate,
        "dtype": options.dtype,
        "l2_normalised": options.l2_normalise,
        **backbone.meta(),
        "decembert_version": __version__,
    }


# ---------------------------------------------------------------------------------------------------
# Reading


class _Reader(threading.Thread):
    """Decodes jobs from `jobs` and puts ("items", video_id, stream, ks, pixels) / ("end", ...) /
    ("fail", ...) messages on `out`."""

    def __init__(self, jobs: queue.Queue, out: queue.Queue, grids: list[Grid], options: ExtractOptions, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.jobs, self.out, self.grids, self.options, self.stop = jobs, out, grids, options, stop
        self.decode_s = 0.0

    def _put(self, message: tuple) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(message, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                self._put(("done",))
                return
            self._video(job)

    def _video(self, job: VideoJob) -> None:
        started = time.perf_counter()
        pending: list[list[tuple[int, np.ndarray]]] = [[] for _ in self.grids]
        pin = self.options.device.type == "cuda"

        def flush(s: int) -> None:
            ks = [k for k, _ in pending[s]]
            pixels = torch.from_numpy(np.stack([p for _, p in pending[s]]))
            pending[s].clear()
            self.decode_s += time.perf_counter() - started_chunk[0]
            self._put(("items", job.video_id, s, ks, pixels.pin_memory() if pin else pixels))
            started_chunk[0] = time.perf_counter()

        started_chunk = [started]
        try:
            video = open_video(job.path, self.options.decoder)
            try:
                summary = Decoded()
                for item in sample(video, self.grids, summary):
                    if self.stop.is_set():
                        return
                    pending[item.stream].append((item.k, item.pixels if item.stream else item.pixels[0]))
                    if len(pending[item.stream]) >= self.options.batch_size:
                        flush(item.stream)
                reported = video.info.duration
                if reported > 0 and summary.duration < TRUNCATION_TOLERANCE * reported - 1:
                    raise VideoError(
                        f"truncated: {summary.duration:.1f} s decoded of the {reported:.1f} s the container reports",
                        "truncated",
                    )
            finally:
                video.close()
            for s in range(len(self.grids)):
                if pending[s]:
                    flush(s)
            self.decode_s += time.perf_counter() - started_chunk[0]
            info = {"source": str(job.path), "decoder": video.info.backend, "fps": round(video.info.fps, 4),
                    "width": video.info.width, "height": video.info.height, "frames_decoded": summary.frames,
                    "duration": round(summary.duration, 4)}  # fmt: skip
            self._put(("end", job.video_id, summary.items, info))
        except VideoError as exc:
            self._put(("fail", Failure(job.video_id, str(job.path), exc.kind, exc.reason)))
        except Exception as exc:  # one video must never stop the run
            self._put(("fail", Failure(job.video_id, str(job.path), "unexpected error", f"{exc.__class__.__name__}: {exc}")))


# ---------------------------------------------------------------------------------------------------
# The run


class _Log:
    """Append-only JSON lines, one os.write per line (atomic appends on local file systems).

    A line cut short by a kill is dropped when the log is opened again, so appends start clean."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise DecembertError(f"cannot read {path}: {exc.strerror}") from None
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        self.ids = set()
        self._lines: list[tuple[object, bytes]] = []
        for line in data.splitlines():
            try:
                video_id = json.loads(line)["video_id"]
            except (ValueError, KeyError, TypeError):
                video_id = None
            self.ids.add(video_id)
            self._lines.append((video_id, line))

    def forget(self, ids: set[str]) -> None:
        """Drop the lines of `ids` (videos this run tries again), rewriting the log atomically."""
        if not ids & self.ids:
            return
        kept = [line for video_id, line in self._lines if video_id not in ids]
        atomic_write_bytes(self.path, b"".join(line + b"\n" for line in kept))
        self.ids -= ids

    def append(self, record: dict) -> None:
        self.ids.add(record.get("video_id"))
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        except OSError as exc:
            raise DecembertError(f"cannot write {self.path}: {exc.strerror}; finished videos are kept, rerun to go on") from None
        finally:
            os.close(fd)


def log_names(shard: tuple[int, int]) -> tuple[str, str]:
    """(videos log, failures log) file names for a shard: plain names when there is one shard."""
    i, n = shard
    suffix = "" if n == 1 else f".shard-{i:04d}-of-{n:04d}"
    return f"videos{suffix}.jsonl", f"failures{suffix}.jsonl"


def _check_writable(out: Path) -> None:
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise DecembertError(f"cannot write into {out} ({exc.strerror}); choose a writable --out folder") from None


def extract(
    inputs: Iterable[Path],
    backbone_2d: Backbone,
    backbone_3d: Backbone,
    options: ExtractOptions,
    *,
    on_video: Callable[[str, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract both streams of every video of this shard into `options.out`; see the module doc.

    `on_start(n)` gets the number of videos left to do; `on_video(video_id, "done" | "failed")` is
    called after each. Raises DecembertError for what stops the whole run (output not writable, disk
    full, settings that disagree with the features already in `out`).
    """
    started = time.perf_counter()
    out = Path(options.out).expanduser()
    if options.dtype not in ("float16", "float32"):
        raise DecembertError(f"dtype {options.dtype!r}: use float16 or float32")
    if options.batch_size < 1 or options.readers < 1:
        raise DecembertError("--batch-size and --readers must be >= 1")
    grids = grids_for(backbone_2d, backbone_3d, options.layout)
    _check_writable(out)
    dirs = [out / "2d", out / "3d"]
    backbones = [backbone_2d, backbone_3d]
    for folder, backbone, grid in zip(dirs, backbones, grids):
        write_stream_meta(folder, stream_meta(backbone, grid, options))
    videos_log, failures_log = (_Log(out / name) for name in log_names(options.shard))

    jobs_all, bad, ignored = list_videos(inputs)
    summary = ExtractSummary(ignored_files=ignored)
    todo: list[VideoJob] = []
    for job in shard_of(jobs_all, options.shard):
        summary.videos += 1
        if all((d / f"{job.video_id}.npy").is_file() for d in dirs):
            summary.already_done += 1
            if job.video_id not in videos_log.ids:  # killed between writing its files and its log line
                counts = [int(np.load(d / f"{job.video_id}.npy", mmap_mode="r").shape[0]) for d in dirs]
                videos_log.append({"video_id": job.video_id, "source": str(job.path), "features_2d": counts[0],
                                   "features_3d": counts[1], "recovered": True})  # fmt: skip
        else:
            todo.append(job)
    failures_log.forget({job.video_id for job in todo} | {f.video_id for f in bad})  # tried again now
    mine = {f.video_id for f in shard_of([VideoJob(f.video_id, Path(f.path)) for f in bad], options.shard)}
    for failure in bad:
        if failure.video_id in mine:
            summary.videos += 1
            summary.failed[failure.kind] += 1
            failures_log.append(failure.as_dict())
    if on_start is not None:
        on_start(len(todo))

    for backbone in backbones:
        backbone.module.to(options.device)
        if options.device.type == "cuda" and backbone.stream == "2d":
            backbone.module.to(memory_format=torch.channels_last)

    job_queue: queue.Queue = queue.Queue()
    for job in todo:
        job_queue.put(job)
    messages: queue.Queue = queue.Queue(maxsize=4 * options.readers + 4)
    stop = threading.Event()
    readers = [_Reader(job_queue, messages, grids, options, stop) for _ in range(min(options.readers, max(1, len(todo))))]
    for reader in readers:
        reader.start()

    features: dict[str, list[dict[int, np.ndarray]]] = {}
    expected: dict[str, tuple[tuple[int, ...], dict]] = {}
    pending: list[list[tuple[str, list[int], torch.Tensor]]] = [[], []]
    failed_ids: set[str] = set()

    def run_stream(s: int) -> None:
        batch = pending[s]
        if not batch:
            return
        pixels = torch.cat([p for _, _, p in batch]).to(options.device, non_blocking=True)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(options.device, options.autocast):
            x = normalise_pixels(pixels, backbones[s])
            if options.device.type == "cuda" and s == 0:
                x = x.contiguous(memory_format=torch.channels_last)
            y = backbones[s].module(x).float()
            if options.l2_normalise:
                y = torch.nn.functional.normalize(y, dim=-1)
            y = y.cpu().numpy()
        summary.infer_s += time.perf_counter() - t0
        row = 0
        for video_id, ks, _ in batch:
            for k in ks:
                if video_id in features:
                    features[video_id][s][k] = y[row]
                row += 1
        batch.clear()

    def finish_ready() -> None:
        for video_id in [v for v in expected if v in features]:
            counts, info = expected[video_id]
            got = features[video_id]
            if any(len(got[s]) < counts[s] for s in range(2)):
                continue
            arrays = []
            for s in range(2):
                if sorted(got[s]) != list(range(counts[s])):
                    raise RuntimeError(f"{video_id}: stream {s} items {sorted(got[s])[:5]}... are not 0..{counts[s] - 1}")
                arrays.append(np.stack([got[s][k] for k in range(counts[s])]).astype(options.dtype))
            write_features(dirs[1] / f"{video_id}.npy", arrays[1])  # 2D last: both present = finished
            write_features(dirs[0] / f"{video_id}.npy", arrays[0])
            videos_log.append({"video_id": video_id, **info, "features_2d": counts[0], "features_3d": counts[1]})
            summary.extracted += 1
            summary.seconds += float(info["duration"])
            summary.frames_decoded += int(info["frames_decoded"])
            del features[video_id], expected[video_id]
            if on_video is not None:
                on_video(video_id, "done")

    live = len(readers)
    try:
        while live:
            try:
                message = messages.get(timeout=0.01 if any(pending) else 1.0)
            except queue.Empty:
                for s in range(2):  # the readers are behind: use the model on what is there
                    run_stream(s)
                finish_ready()
                continue
            kind = message[0]
            if kind == "done":
                live -= 1
            elif kind == "items":
                _, video_id, s, ks, pixels = message
                if video_id in failed_ids:
                    continue
                features.setdefault(video_id, [{}, {}])
                pending[s].append((video_id, ks, pixels))
                if sum(len(k) for _, k, _ in pending[s]) >= options.batch_size:
                    run_stream(s)
                    finish_ready()
            elif kind == "end":
                _, video_id, counts, info = message
                features.setdefault(video_id, [{}, {}])
                expected[video_id] = (counts, info)
                finish_ready()
            elif kind == "fail":
                failure: Failure = message[1]
                failed_ids.add(failure.video_id)
                features.pop(failure.video_id, None)
                for s in range(2):
                    pending[s] = [p for p in pending[s] if p[0] != failure.video_id]
                summary.failed[failure.kind] += 1
                failures_log.append(failure.as_dict())
                if on_video is not None:
                    on_video(failure.video_id, "failed")
        for s in range(2):
            run_stream(s)
        finish_ready()
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=5)
    summary.decode_s = sum(r.decode_s for r in readers)
    summary.wall_s = time.perf_counter() - started
    return summary
