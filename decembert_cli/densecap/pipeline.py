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
    safe_id,
)
from decembert_cli.data.video import Decoded, Grid, VideoError, frame_grid, open_video, sample
from decembert_cli.densecap.backends import Captioner, Frame, ImportBackend
from decembert_cli.densecap.importers import FORMATS
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_text

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
        return sorted(regions, key=lambda r: -r.score)[:top_k]  # type: ignore[operator]
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
    if not options.interval > 0:
        raise DecembertError(f"--interval {options.interval}: use a positive number of seconds")
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
    kept = [{"time": round(t, 3), "regions": [r.as_dict() for r in _keep(regions, top_k)]} for t, regions in frames]
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

    captioned: dict[str, list[tuple[float, list[Region]]]] = {}  # video -> its frames so far
    ended: list[tuple[VideoJob, tuple[int, int]]] = []  # read to the end, frames maybe still in `batch`
    batch: list[Frame] = []

    failed: set[str] = set()  # videos that failed: their later frames and end are ignored

    def fail(failure: Failure) -> None:
        failed.add(failure.video_id)
        captioned.pop(failure.video_id, None)
        summary.failed[failure.kind] += 1
        failures_log.append(failure.as_dict())
        if on_video is not None:
            on_video(failure.video_id, "failed")

    def run_batch() -> None:
        """Caption the frames in `batch`; a batch that raises is retried frame by frame to find the culprit."""
        if not batch:
            return
        frames = list(batch)
        batch.clear()
        t0 = time.perf_counter()
        try:
            found = captioner.caption(frames)
        except DecembertError:
            raise
        except Exception as exc:  # one video must never stop the run
            summary.caption_s += time.perf_counter() - t0
            if len(frames) == 1:
                f = frames[0]
                fail(Failure(f.video_id, str(f.source), "captioner error", f"{exc.__class__.__name__}: {exc}"))
                return
            for frame in frames:
                if frame.video_id in captioned:
                    batch.append(frame)
                    run_batch()
            return
        summary.caption_s += time.perf_counter() - t0
        for frame, regions in zip(frames, found):
            if frame.video_id in captioned:
                captioned[frame.video_id].append((frame.time, regions))

    def finish() -> None:
        """Write the record of each video read to its end whose frames are all captioned."""
        waiting = {f.video_id for f in batch}
        for job, size in [e for e in ended if e[0].video_id not in waiting]:
            ended.remove((job, size))
            if job.video_id not in captioned:  # failed meanwhile
                continue
            frames = captioned.pop(job.video_id)
            record_meta = {**meta, "source": str(job.path), "width": size[0], "height": size[1]}
            _write_record(out, job.video_id, frames, record_meta, options.top_k, videos_log, summary)
            if on_video is not None:
                on_video(job.video_id, "done")

    messages: queue.Queue = queue.Queue(maxsize=2 * options.batch_size + 4)
    stop = threading.Event()
    reader = _Reader(plan.todo, messages, frame_grid(options.interval), options.decoder, stop)
    reader.start()
    try:
        while True:
            message = messages.get()
            if message[0] == "done":
                break
            if message[0] in ("frame", "end") and (message[1].video_id in failed):
                continue
            if message[0] == "frame":
                frame = message[1]
                captioned.setdefault(frame.video_id, [])
                batch.append(frame)
                if len(batch) >= options.batch_size:
                    run_batch()
                    finish()
            elif message[0] == "end":
                captioned.setdefault(message[1].video_id, [])
                ended.append((message[1], message[2]))
                finish()
            elif message[0] == "fail":
                batch[:] = [f for f in batch if f.video_id != message[1].video_id]
                fail(message[1])
            elif message[0] == "fatal":
                raise message[1]
        run_batch()
        finish()
    finally:
        stop.set()
        reader.join(timeout=5)
    summary.wall_s = time.perf_counter() - started
    return summary


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
    if on_start is not None:
        on_start(len(files))
    index, count = options.shard
    seen: set[str] = set()
    for path in files:
        for item in importer.videos(path, options.interval):
            if count > 1 and zlib.crc32(item.video_id.encode()) % count != index:
                continue
            summary.videos += 1
            if isinstance(item, Failure):
                failures_log.forget({item.video_id})
                failures_log.append(item.as_dict())
                summary.failed[item.kind] += 1
                continue
            if not safe_id(item.video_id):
                failure = Failure(
                    item.video_id,
                    item.source,
                    "unsafe id",
                    f"video id {item.video_id!r} could write outside the output folder; rename the image or fix --option pattern/video",
                )
                failures_log.append(failure.as_dict())
                summary.failed[failure.kind] += 1
                continue
            if item.video_id in seen:
                failure = Failure(
                    item.video_id,
                    item.source,
                    "duplicate id",
                    "this video was also in an earlier input of this run; give each video's frames in one file",
                )
                failures_log.append(failure.as_dict())
                summary.failed[failure.kind] += 1
                continue
            seen.add(item.video_id)
            if (out / f"{item.video_id}.json").is_file():
                summary.already_done += 1
                _relog([item.video_id], out, videos_log)
                continue
            failures_log.forget({item.video_id})
            record_meta = {
                **meta,
                "source": item.source,
                "imported_from": FORMATS[item.format],
                "width": None,
                "height": None,
            }
            _write_record(out, item.video_id, item.frames, record_meta, options.top_k, videos_log, summary)
        if on_video is not None:
            on_video(path.name, "done")
    summary.wall_s = time.perf_counter() - started
    return summary
