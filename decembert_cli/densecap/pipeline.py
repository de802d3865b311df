"""`decembert dense-caption`: frames every `interval` s -> regions -> one store record per video.

Videos are decoded with the extract-features decoder on a frame grid (0, 2, 4, ... s, whole
frames) and captioned in batches as the frames arrive, so a long video never sits in memory. Each
video's record (`OUT/{video_id}.json`, format decembert.densecap/1: backend, model and its SHA-256,
interval, frame size, and per frame its time and regions with pixel boxes and scores) is written
atomically: a video whose record exists is done and skipped on a rerun. Failures go to
failures.jsonl with their reason; `OUT/densecap.json` holds the run's settings, and a rerun with
other settings is refused rather than mixing two captioners in one store.

A reader thread decodes ahead while the captioner works, and frames of consecutive videos share a
batch. `import_captions` fills the same store from dense captions other tools wrote.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decembert_cli.config.loader import check_value
from decembert_cli.config.schema import Interval
from decembert_cli.data.densecap import STORE_FORMAT, store_record
from decembert_cli.data.jobs import (
    Failure,
    JobLog,
    VideoJob,
    check_writable,
    keep_settings,
    log_names,
    plan_work,
    put_until_stopped,
    unsafe_id_reason,
)
from decembert_cli.data.video import Decoded, Grid, VideoError, frame_grid, open_video, sample
from decembert_cli.densecap.backends import Captioner, Frame, ImportBackend
from decembert_cli.densecap.importers import FORMATS, ImportedVideo
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_text, safe_id

SETTINGS_FILE = "densecap.json"


@dataclass
class CaptionOptions:
    out: Path
    interval: float = 2.0
    top_k: int = 0  # regions kept per frame (0: all the backend gives)
    batch_size: int = 8
    decoder: str = "auto"
    shard: tuple[int, int] = (0, 1)


@dataclass
class CaptionSummary:
    videos: int = 0
    already_done: int = 0
    captioned: int = 0
    frames: int = 0
    regions: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    caption_s: float = 0.0
    ignored_files: list[str] = field(default_factory=list)


def _keep(regions: list[Region], top_k: int) -> list[Region]:
    """The top `top_k` regions by score (the backend's order when it gives no scores); all when 0."""
    if top_k <= 0 or len(regions) <= top_k:
        return regions
    if all(r.score is not None for r in regions):
        return sorted(regions, key=lambda r: -(r.score or 0.0))[:top_k]  # (every score is set here)
    return regions[:top_k]


def _settings(captioner: Captioner, options: CaptionOptions) -> dict[str, Any]:
    return {"format": STORE_FORMAT, **captioner.meta(), "interval": options.interval, "top_k": options.top_k}


def _read_settings(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DecembertError(f"cannot read {path} ({exc}); delete it to start this store afresh") from None


def _open_store(out: Path, backend: Any, options: CaptionOptions) -> tuple[dict[str, Any], JobLog, JobLog]:
    """Check `out` is writable and holds captions of these settings; the run's settings and logs."""
    check_value(options.interval, Interval, "interval")
    check_writable(out)
    settings = _settings(backend, options)
    keep_settings(out / SETTINGS_FILE, settings, _read_settings(out / SETTINGS_FILE), "dense captions")
    videos_log, failures_log = (JobLog(out / name) for name in log_names(options.shard))
    return settings, videos_log, failures_log


def _write_record(
    out: Path,
    video_id: str,
    frames: list[tuple[float, list[Region]]],
    meta: dict[str, Any],
    top_k: int,
    videos_log: JobLog,
    summary: CaptionSummary,
) -> None:
    """One video's record, written atomically, then its log line: the record existing = done."""
    kept: list[dict[str, Any]] = [
        {"time": round(t, 3), "regions": [r.as_dict() for r in _keep(regions, top_k)]} for t, regions in frames
    ]
    record = store_record(video_id, meta["interval"], kept, meta)
    atomic_write_text(out / f"{video_id}.json", json.dumps(record) + "\n")
    regions = sum(len(f["regions"]) for f in kept)
    videos_log.append({"video_id": video_id, "source": meta.get("source"), "frames": len(kept), "regions": regions})
    summary.captioned += 1
    summary.frames += len(kept)
    summary.regions += regions


def _relog(done: list[str], out: Path, videos_log: JobLog) -> None:
    """Log lines for finished videos whose line is missing (killed between the record and the line)."""
    for video_id in done:
        if video_id not in videos_log.ids:
            videos_log.append({"video_id": video_id, "recovered": True})


class _Reader(threading.Thread):
    """Decodes the jobs in order into ("frame", Frame) / ("end", job, (w, h)) / ("fail", Failure) /
    ("fatal", exc) messages, then ("done",), so decoding overlaps captioning."""

    def __init__(self, jobs: list[VideoJob], out: queue.Queue, grid: Grid, decoder: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.jobs, self.out, self.grid, self.decoder, self.stop = jobs, out, grid, decoder, stop

    def _put(self, message: tuple) -> None:
        put_until_stopped(self.out, message, self.stop)

    def run(self) -> None:
        for job in self.jobs:
            if self.stop.is_set():
                return
            try:
                video = open_video(job.path, self.decoder)
                try:
                    size = (video.info.width, video.info.height)
                    for item in sample(video, [self.grid], Decoded()):
                        pixels = item.pixels[0]
                        size = (pixels.shape[1], pixels.shape[0])  # after rotation
                        self._put(("frame", Frame(job.video_id, job.path, self.grid.times(item.k)[0], pixels)))
                        if self.stop.is_set():
                            return
                finally:
                    video.close()
                self._put(("end", job, size))
            except VideoError as exc:
                self._put(("fail", Failure(job.video_id, str(job.path), exc.kind, exc.reason)))
            except DecembertError as exc:
                self._put(("fatal", exc))
                return
            except Exception as exc:  # one video must never stop the run
                self._put(
                    (
                        "fail",
                        Failure(job.video_id, str(job.path), "unexpected error", f"{exc.__class__.__name__}: {exc}"),
                    )
                )
        self._put(("done",))


@dataclass
class _Store:
    """A run's view of the store: where records go, what every record carries, the logs and the counts."""

    out: Path
    meta: dict[str, Any]  # the run's settings, without the store format
    top_k: int
    videos_log: JobLog
    failures_log: JobLog
    summary: CaptionSummary
    on_video: Callable[[str, str], None] | None

    def write(self, video_id: str, frames: list[tuple[float, list[Region]]], record_meta: dict[str, Any]) -> None:
        """One video's record and log line (see `_write_record`)."""
        _write_record(self.out, video_id, frames, record_meta, self.top_k, self.videos_log, self.summary)

    def log_failure(self, failure: Failure) -> None:
        """A line in failures.jsonl, counted by kind."""
        self.failures_log.append(failure.as_dict())
        self.summary.failed[failure.kind] += 1


@dataclass
class _Captioning(_Store):
    """`caption_videos`' state: frames of consecutive videos wait in `batch` for the captioner; a
    video's record is written once it is read to its end and all its frames are captioned."""

    captioner: Captioner
    batch_size: int
    # video -> its frames so far
    captioned: dict[str, list[tuple[float, list[Region]]]] = field(default_factory=dict)
    # read to the end, frames maybe still in `batch`
    ended: list[tuple[VideoJob, tuple[int, int]]] = field(default_factory=list)
    batch: list[Frame] = field(default_factory=list)
    # videos that failed: their later frames and end are ignored
    failed: set[str] = field(default_factory=set)

    def handle(self, message: tuple) -> None:
        """Act on one of the reader's messages (but "done")."""
        kind = message[0]
        if kind in ("frame", "end") and (message[1].video_id in self.failed):
            return
        if kind == "frame":
            frame = message[1]
            self.captioned.setdefault(frame.video_id, [])
            self.batch.append(frame)
            if len(self.batch) >= self.batch_size:
                self.run_batch()
                self.finish()
        elif kind == "end":
            self.captioned.setdefault(message[1].video_id, [])
            self.ended.append((message[1], message[2]))
            self.finish()
        elif kind == "fail":
            self.batch[:] = [f for f in self.batch if f.video_id != message[1].video_id]
            self.fail(message[1])
        elif kind == "fatal":
            raise message[1]

    def fail(self, failure: Failure) -> None:
        """Log a failed video and drop its captions; its later frames and end are ignored."""
        self.failed.add(failure.video_id)
        self.captioned.pop(failure.video_id, None)
        self.log_failure(failure)
        if self.on_video is not None:
            self.on_video(failure.video_id, "failed")

    def run_batch(self) -> None:
        """Caption the frames in `batch`; a batch that raises is retried frame by frame to find the culprit."""
        if not self.batch:
            return
        frames = list(self.batch)
        self.batch.clear()
        t0 = time.perf_counter()
        try:
            found = self.captioner.caption(frames)
        except DecembertError:
            raise
        except Exception as exc:  # one video must never stop the run
            self.summary.caption_s += time.perf_counter() - t0
            self._retry(frames, exc)
            return
        self.summary.caption_s += time.perf_counter() - t0
        for frame, regions in zip(frames, found):
            if frame.video_id in self.captioned:
                self.captioned[frame.video_id].append((frame.time, regions))

    def _retry(self, frames: list[Frame], exc: Exception) -> None:
        """After `frames` raised `exc`: a single frame fails its video; more are captioned one by one."""
        if len(frames) == 1:
            f = frames[0]
            self.fail(Failure(f.video_id, str(f.source), "captioner error", f"{exc.__class__.__name__}: {exc}"))
            return
        for frame in frames:
            if frame.video_id in self.captioned:
                self.batch.append(frame)
                self.run_batch()

    def finish(self) -> None:
        """Write the record of each video read to its end whose frames are all captioned."""
        waiting = {f.video_id for f in self.batch}
        for job, size in [e for e in self.ended if e[0].video_id not in waiting]:
            self.ended.remove((job, size))
            if job.video_id not in self.captioned:  # failed meanwhile
                continue
            frames = self.captioned.pop(job.video_id)
            record_meta = {**self.meta, "source": str(job.path), "width": size[0], "height": size[1]}
            self.write(job.video_id, frames, record_meta)
            if self.on_video is not None:
                self.on_video(job.video_id, "done")


def caption_videos(
    inputs: Iterable[Path],
    captioner: Captioner,
    options: CaptionOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_video: Callable[[str, str], None] | None = None,
) -> CaptionSummary:
    """Caption every video of this shard into `options.out`; see the module doc.

    Frames of consecutive videos share a batch; a video's record is written once its last frame is
    captioned. A failing video (decode error, or the captioner raising on its frames) is logged in
    failures.jsonl and the run goes on.
    """
    started = time.perf_counter()
    out = Path(options.out).expanduser()
    settings, videos_log, failures_log = _open_store(out, captioner, options)
    plan = plan_work(inputs, options.shard, lambda job: (out / f"{job.video_id}.json").is_file(), failures_log)
    summary = CaptionSummary(
        videos=plan.videos, already_done=len(plan.done), failed=plan.failed, ignored_files=plan.ignored
    )
    _relog([job.video_id for job in plan.done], out, videos_log)
    if on_start is not None:
        on_start(len(plan.todo))
    meta = {k: v for k, v in settings.items() if k != "format"}
    run = _Captioning(
        out=out,
        meta=meta,
        top_k=options.top_k,
        videos_log=videos_log,
        failures_log=failures_log,
        summary=summary,
        on_video=on_video,
        captioner=captioner,
        batch_size=options.batch_size,
    )

    messages: queue.Queue = queue.Queue(maxsize=2 * options.batch_size + 4)
    stop = threading.Event()
    reader = _Reader(plan.todo, messages, frame_grid(options.interval), options.decoder, stop)
    reader.start()
    try:
        while True:
            message = messages.get()
            if message[0] == "done":
                break
            run.handle(message)
        run.run_batch()
        run.finish()
    finally:
        stop.set()
        reader.join(timeout=5)
    summary.wall_s = time.perf_counter() - started
    return summary


def _refused(item: ImportedVideo, seen: set[str]) -> Failure | None:
    """Why an imported video may not go in the store (an unsafe id, or one already seen in this run); None if it may."""
    if not safe_id(item.video_id):
        return Failure(
            item.video_id,
            item.source,
            "unsafe id",
            f"{unsafe_id_reason(item.video_id)}; rename the image or fix --option pattern/video",
        )
    if item.video_id in seen:
        return Failure(
            item.video_id,
            item.source,
            "duplicate id",
            "this video was also in an earlier input of this run; give each video's frames in one file",
        )
    return None


def _import_video(store: _Store, item: ImportedVideo | Failure, seen: set[str]) -> None:
    """Write one imported video's record, or log why it cannot be read or stored; skip it if its record exists."""
    if isinstance(item, Failure):
        store.failures_log.forget({item.video_id})
        store.log_failure(item)
        return
    failure = _refused(item, seen)
    if failure is not None:
        store.log_failure(failure)
        return
    seen.add(item.video_id)
    if (store.out / f"{item.video_id}.json").is_file():
        store.summary.already_done += 1
        _relog([item.video_id], store.out, store.videos_log)
        return
    store.failures_log.forget({item.video_id})
    record_meta = {
        **store.meta,
        "source": item.source,
        "imported_from": FORMATS[item.format],
        "width": None,
        "height": None,
    }
    store.write(item.video_id, item.frames, record_meta)


def import_captions(
    inputs: Iterable[Path],
    importer: ImportBackend,
    options: CaptionOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_video: Callable[[str, str], None] | None = None,
) -> CaptionSummary:
    """Read dense captions other tools wrote (`densecap.importers`) into the store at `options.out`.

    The same store, logs and resumption as `caption_videos`: a video whose record exists is skipped,
    what cannot be read goes to failures.jsonl. With --shard i/n a video goes to shard crc32(id) % n
    (the files are read whole, so the inputs need no listing first).
    """
    started = time.perf_counter()
    out = Path(options.out).expanduser()
    settings, videos_log, failures_log = _open_store(out, importer, options)
    files, ignored = importer.files(inputs)
    summary = CaptionSummary(ignored_files=ignored)
    meta = {k: v for k, v in settings.items() if k != "format"}
    store = _Store(out, meta, options.top_k, videos_log, failures_log, summary, on_video)
    if on_start is not None:
        on_start(len(files))
    index, count = options.shard
    seen: set[str] = set()
    for path in files:
        for item in importer.videos(path, options.interval):
            if count > 1 and zlib.crc32(item.video_id.encode()) % count != index:
                continue
            summary.videos += 1
            _import_video(store, item, seen)
        if on_video is not None:
            on_video(path.name, "done")
    summary.wall_s = time.perf_counter() - started
    return summary
