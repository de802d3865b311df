"""`decembert dense-caption`: frames every `interval` s -> regions -> one store record per video.

Videos are decoded with the extract-features decoder on a frame grid (0, 2, 4, ... s, whole
frames) and captioned in batches as the frames arrive, so a long video never sits in memory. Each
video's record (`OUT/{video_id}.json`, format decembert.densecap/1: backend, model and its SHA-256,
interval, frame size, and per frame its time and regions with pixel boxes and scores) is written
atomically: a video whose record exists is done and skipped on a rerun. Failures go to
failures.jsonl with their reason; `OUT/densecap.json` holds the run's settings, and a rerun with
other settings is refused rather than mixing two captioners in one store.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from decembert_cli.data.densecap import STORE_FORMAT, store_record
from decembert_cli.data.jobs import Failure, JobLog, VideoJob, check_writable, keep_settings, log_names, plan_work
from decembert_cli.data.video import Decoded, Grid, VideoError, frame_grid, open_video, sample
from decembert_cli.densecap.backends import Captioner
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


def caption_videos(
    inputs: Iterable[Path],
    captioner: Captioner,
    options: CaptionOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_video: Callable[[str, str], None] | None = None,
) -> CaptionSummary:
    """Caption every video of this shard into `options.out`; see the module doc."""
    started = time.perf_counter()
    if not options.interval > 0:
        raise DecembertError(f"--interval {options.interval}: use a positive number of seconds")
    out = Path(options.out).expanduser()
    check_writable(out)
    settings = _settings(captioner, options)
    keep_settings(out / SETTINGS_FILE, settings, _read_settings(out / SETTINGS_FILE), "dense captions")
    videos_log, failures_log = (JobLog(out / name) for name in log_names(options.shard))
    plan = plan_work(inputs, options.shard, lambda job: (out / f"{job.video_id}.json").is_file(), failures_log)
    summary = CaptionSummary(videos=plan.videos, already_done=len(plan.done), failed=plan.failed, ignored_files=plan.ignored)
    todo = plan.todo
    if on_start is not None:
        on_start(len(todo))
    grid = [frame_grid(options.interval)]
    meta = {k: v for k, v in settings.items() if k != "format"}
    for job in todo:
        try:
            frames, size = _caption_one(job, captioner, grid, options, summary)
        except VideoError as exc:
            failure = Failure(job.video_id, str(job.path), exc.kind, exc.reason)
        except DecembertError:
            raise
        except Exception as exc:  # one video must never stop the run
            failure = Failure(job.video_id, str(job.path), "unexpected error", f"{exc.__class__.__name__}: {exc}")
        else:
            record = store_record(job.video_id, options.interval, frames, {**meta, "source": str(job.path), "width": size[0], "height": size[1]})
            atomic_write_text(out / f"{job.video_id}.json", json.dumps(record) + "\n")
            videos_log.append({"video_id": job.video_id, "source": str(job.path), "frames": len(frames),
                               "regions": sum(len(f["regions"]) for f in frames)})  # fmt: skip
            summary.captioned += 1
            if on_video is not None:
                on_video(job.video_id, "done")
            continue
        summary.failed[failure.kind] += 1
        failures_log.append(failure.as_dict())
        if on_video is not None:
            on_video(job.video_id, "failed")
    summary.wall_s = time.perf_counter() - started
    return summary


def _caption_one(job: VideoJob, captioner: Captioner, grid: list[Grid], options: CaptionOptions, summary: CaptionSummary) -> tuple[list[dict], tuple[int, int]]:
    video = open_video(job.path, options.decoder)
    frames: list[dict] = []
    batch: list[tuple[float, Any]] = []
    size = (video.info.width, video.info.height)

    def flush() -> None:
        t0 = time.perf_counter()
        regions = captioner.caption([pixels for _, pixels in batch])
        summary.caption_s += time.perf_counter() - t0
        for (t, _pixels), found in zip(batch, regions):
            kept = _keep(found, options.top_k)
            frames.append({"time": round(t, 3), "regions": [r.as_dict() for r in kept]})
            summary.frames += 1
            summary.regions += len(kept)
        batch.clear()

    try:
        for item in sample(video, grid, Decoded()):
            pixels = item.pixels[0]
            size = (pixels.shape[1], pixels.shape[0])  # after rotation
            batch.append((grid[0].times(item.k)[0], pixels))
            if len(batch) >= options.batch_size:
                flush()
        if batch:
            flush()
    finally:
        video.close()
    return frames, size
