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

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decembert_cli import __version__
from decembert_cli.data.feature_store import LAYOUTS, write_features, write_stream_meta
from decembert_cli.data.jobs import Failure, JobLog, VideoJob, check_writable, log_names, plan_work, put_until_stopped
from decembert_cli.data.video import (
    Decoded,
    Grid,
    VideoError,
    clip_grid,
    consecutive_clip_grid,
    image_grid,
    open_video,
    sample,
)
from decembert_cli.errors import DecembertError
from decembert_cli.features.backbones import Backbone, normalise_pixels
from decembert_cli.precision import autocast

TRUNCATION_TOLERANCE = 0.9  # decoded duration below this share of the container's (minus 1 s) = truncated


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
            "videos": self.videos,
            "already_done": self.already_done,
            "extracted": self.extracted,
            "failed": dict(self.failed),
            "seconds_of_video": round(self.seconds, 3),
            "frames_decoded": self.frames_decoded,
            "wall_s": round(self.wall_s, 3),
            "decode_s": round(self.decode_s, 3),
            "infer_s": round(self.infer_s, 3),
        }


# ---------------------------------------------------------------------------------------------------
# Grids and metadata


def grids_for(b2: Backbone, b3: Backbone, layout: str) -> list[Grid]:
    """The 2D grid (one frame per second) and the 3D grid of the layout."""
    if layout not in LAYOUTS:
        raise DecembertError(f"layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    g3 = (
        clip_grid(b3.size, b3.frames, b3.fps)
        if layout == "decembert"
        else consecutive_clip_grid(b3.size, b3.frames, b3.fps)
    )
    return [image_grid(b2.size), g3]


def stream_meta(backbone: Backbone, grid: Grid, options: ExtractOptions) -> dict[str, Any]:
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

    def __init__(
        self, jobs: queue.Queue, out: queue.Queue, grids: list[Grid], options: ExtractOptions, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.jobs, self.out, self.grids, self.options, self.stop = jobs, out, grids, options, stop
        self.decode_s = 0.0

    def _put(self, message: tuple) -> None:
        put_until_stopped(self.out, message, self.stop)

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
            info = {
                "source": str(job.path),
                "decoder": video.info.backend,
                "fps": round(video.info.fps, 4),
                "width": video.info.width,
                "height": video.info.height,
                "frames_decoded": summary.frames,
                "duration": round(summary.duration, 4),
            }
            self._put(("end", job.video_id, summary.items, info))
        except VideoError as exc:
            self._put(("fail", Failure(job.video_id, str(job.path), exc.kind, exc.reason)))
        except Exception as exc:  # one video must never stop the run
            self._put(
                ("fail", Failure(job.video_id, str(job.path), "unexpected error", f"{exc.__class__.__name__}: {exc}"))
            )


# ---------------------------------------------------------------------------------------------------
# The run


def _check_options(options: ExtractOptions) -> None:
    """Refuse a dtype, batch size or reader count the run cannot use."""
    if options.dtype not in ("float16", "float32"):
        raise DecembertError(f"dtype {options.dtype!r}: use float16 or float32")
    if options.batch_size < 1 or options.readers < 1:
        raise DecembertError("--batch-size and --readers must be >= 1")


def _relog(done: list[VideoJob], dirs: list[Path], videos_log: JobLog) -> None:
    """Log lines for finished videos whose line is missing (killed between writing its files and its log line)."""
    for job in done:
        if job.video_id not in videos_log.ids:
            counts = [int(np.load(d / f"{job.video_id}.npy", mmap_mode="r").shape[0]) for d in dirs]
            videos_log.append(
                {
                    "video_id": job.video_id,
                    "source": str(job.path),
                    "features_2d": counts[0],
                    "features_3d": counts[1],
                    "recovered": True,
                }
            )


def _to_device(backbones: list[Backbone], device: torch.device) -> None:
    """Move the backbones to `device`; on GPU the 2D one goes channels-last."""
    for backbone in backbones:
        backbone.module.to(device)
        if device.type == "cuda" and backbone.stream == "2d":
            backbone.module.to(memory_format=torch.channels_last)


def _start_readers(
    todo: list[VideoJob], grids: list[Grid], options: ExtractOptions
) -> tuple[list[_Reader], queue.Queue, threading.Event]:
    """Start the reader threads on the jobs to do; (readers, their message queue, the event that stops them)."""
    job_queue: queue.Queue = queue.Queue()
    for job in todo:
        job_queue.put(job)
    messages: queue.Queue = queue.Queue(maxsize=4 * options.readers + 4)
    stop = threading.Event()
    readers = [
        _Reader(job_queue, messages, grids, options, stop) for _ in range(min(options.readers, max(1, len(todo))))
    ]
    for reader in readers:
        reader.start()
    return readers, messages, stop


@dataclass
class _Collector:
    """The main thread: batches the readers' items across videos per stream, runs the backbones on
    them and writes each video as soon as all its features are in."""

    backbones: list[Backbone]
    dirs: list[Path]  # 2D, 3D
    options: ExtractOptions
    videos_log: JobLog
    failures_log: JobLog
    summary: ExtractSummary
    on_video: Callable[[str, str], None] | None
    features: dict[str, list[dict[int, np.ndarray]]] = field(default_factory=dict)  # per video and stream: k -> row
    expected: dict[str, tuple[tuple[int, ...], dict]] = field(default_factory=dict)  # read to the end: counts, info
    pending: list[list[tuple[str, list[int], torch.Tensor]]] = field(default_factory=lambda: [[], []])
    failed_ids: set[str] = field(default_factory=set)

    def drain(self, messages: queue.Queue, live: int) -> None:
        """Handle the readers' messages until all `live` readers are done, then finish what is left."""
        while live:
            try:
                message = messages.get(timeout=0.01 if any(self.pending) else 1.0)
            except queue.Empty:
                self.flush()  # the readers are behind: use the model on what is there
                continue
            if message[0] == "done":
                live -= 1
            else:
                self.handle(message)
        self.flush()

    def flush(self) -> None:
        """Run both streams on what is pending and write the videos that are complete."""
        for s in range(2):
            self.run_stream(s)
        self.finish_ready()

    def handle(self, message: tuple) -> None:
        """Act on one reader message but "done": a chunk of items, a video read to its end, a failure."""
        kind = message[0]
        if kind == "items":
            _, video_id, s, ks, pixels = message
            if video_id in self.failed_ids:
                return
            self.features.setdefault(video_id, [{}, {}])
            self.pending[s].append((video_id, ks, pixels))
            if sum(len(k) for _, k, _ in self.pending[s]) >= self.options.batch_size:
                self.run_stream(s)
                self.finish_ready()
        elif kind == "end":
            _, video_id, counts, info = message
            self.features.setdefault(video_id, [{}, {}])
            self.expected[video_id] = (counts, info)
            self.finish_ready()
        elif kind == "fail":
            self.fail(message[1])

    def fail(self, failure: Failure) -> None:
        """Drop a failed video's features and pending items (its later items are ignored) and log it."""
        self.failed_ids.add(failure.video_id)
        self.features.pop(failure.video_id, None)
        for s in range(2):
            self.pending[s] = [p for p in self.pending[s] if p[0] != failure.video_id]
        self.summary.failed[failure.kind] += 1
        self.failures_log.append(failure.as_dict())
        if self.on_video is not None:
            self.on_video(failure.video_id, "failed")

    def run_stream(self, s: int) -> None:
        """Run stream s's backbone on its pending items and file each output row under its video."""
        batch = self.pending[s]
        if not batch:
            return
        y = self._infer(s, torch.cat([p for _, _, p in batch]))
        row = 0
        for video_id, ks, _ in batch:
            for k in ks:
                if video_id in self.features:
                    self.features[video_id][s][k] = y[row]
                row += 1
        batch.clear()

    def _infer(self, s: int, pixels: torch.Tensor) -> np.ndarray:
        """Stream s's features (rows, D) of a batch of pixels, as float32 on the CPU."""
        options = self.options
        pixels = pixels.to(options.device, non_blocking=True)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(options.device, options.autocast):
            x = normalise_pixels(pixels, self.backbones[s])
            if options.device.type == "cuda" and s == 0:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.backbones[s].module(x).float()
            if options.l2_normalise:
                y = torch.nn.functional.normalize(y, dim=-1)
            y = y.cpu().numpy()
        self.summary.infer_s += time.perf_counter() - t0
        return y

    def finish_ready(self) -> None:
        """Write every video read to its end whose items of both streams are all in."""
        for video_id in [v for v in self.expected if v in self.features]:
            counts, info = self.expected[video_id]
            got = self.features[video_id]
            if any(len(got[s]) < counts[s] for s in range(2)):
                continue
            self._write(video_id, [self._stack(video_id, s, got[s], counts[s]) for s in range(2)], counts, info)

    def _stack(self, video_id: str, s: int, got: dict[int, np.ndarray], count: int) -> np.ndarray:
        """Stream s's rows of one video in order, in the store's dtype; every item 0..count-1 must be there."""
        if sorted(got) != list(range(count)):
            raise RuntimeError(f"{video_id}: stream {s} items {sorted(got)[:5]}... are not 0..{count - 1}")
        return np.stack([got[k] for k in range(count)]).astype(self.options.dtype)

    def _write(self, video_id: str, arrays: list[np.ndarray], counts: tuple[int, ...], info: dict) -> None:
        """Write one finished video's two .npy files and its log line, count it and forget it."""
        write_features(self.dirs[1] / f"{video_id}.npy", arrays[1])  # 2D last: both present = finished
        write_features(self.dirs[0] / f"{video_id}.npy", arrays[0])
        self.videos_log.append({"video_id": video_id, **info, "features_2d": counts[0], "features_3d": counts[1]})
        self.summary.extracted += 1
        self.summary.seconds += float(info["duration"])
        self.summary.frames_decoded += int(info["frames_decoded"])
        del self.features[video_id], self.expected[video_id]
        if self.on_video is not None:
            self.on_video(video_id, "done")


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
    _check_options(options)
    grids = grids_for(backbone_2d, backbone_3d, options.layout)
    check_writable(out)
    dirs = [out / "2d", out / "3d"]
    backbones = [backbone_2d, backbone_3d]
    for folder, backbone, grid in zip(dirs, backbones, grids):
        write_stream_meta(folder, stream_meta(backbone, grid, options))
    videos_log, failures_log = (JobLog(out / name) for name in log_names(options.shard))

    plan = plan_work(
        inputs, options.shard, lambda job: all((d / f"{job.video_id}.npy").is_file() for d in dirs), failures_log
    )
    summary = ExtractSummary(
        videos=plan.videos, already_done=len(plan.done), failed=plan.failed, ignored_files=plan.ignored
    )
    _relog(plan.done, dirs, videos_log)
    if on_start is not None:
        on_start(len(plan.todo))

    _to_device(backbones, options.device)
    collector = _Collector(backbones, dirs, options, videos_log, failures_log, summary, on_video)
    readers, messages, stop = _start_readers(plan.todo, grids, options)
    try:
        collector.drain(messages, len(readers))
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=5)
    summary.decode_s = sum(r.decode_s for r in readers)
    summary.wall_s = time.perf_counter() - started
    return summary
