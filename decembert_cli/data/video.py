"""Video decoding: OpenCV first, PyAV for what OpenCV cannot open; frames sampled on a time grid.

Decoding never kills the process: OpenCV's Python binding segfaults on a path that is not valid UTF-8
(a file or folder named in Latin-1, say), so such a path goes to PyAV only; both get the absolute path,
so a relative name such as `pipe:0.mp4` is the file, never an FFmpeg protocol. Neither is given anything
but a regular file (a FIFO would block). Work is bounded: at most 25 items a second (`MIN_INTERVAL`)
over at most a day of timestamps, held in memory only while their frames are still arriving.

Frames are decoded once, in order, and only those a request needs are converted to pixels
(OpenCV's grab/retrieve; PyAV's frame objects), so a video never sits in memory. Times are the
frames' own presentation timestamps, so variable-frame-rate videos sample at the right instants.
Frame i is shown from its timestamp p_i for about one nominal frame period; a request at time t is
served by the first frame whose period reaches past t (the frame on screen at t, or the next one
after a gap). Rotation metadata is applied (OpenCV does it itself; PyAV through the frame's display
matrix), grayscale becomes RGB, and every frame comes out as RGB uint8 (H, W, 3).

A `Grid` says which frames a feature stream wants: item k asks for a few frame times and is kept
when its anchor time lies inside the decoded video (item 0 always, so a 0.3 s video has one). Items
come out as soon as their frames are decoded, already resized and centre-cropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from decembert_cli.config.schema import MAX_INTERVAL, MIN_INTERVAL
from decembert_cli.errors import DecembertError

# OpenCV and its FFmpeg print warnings for every file they cannot open; the failure is reported
# once, in failures.jsonl, instead (set the variables yourself to see them).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

MAX_DURATION = 24 * 3600.0  # seconds of timestamps decoded at most: a longer video is cut into parts first
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv"}
)


class VideoError(Exception):
    """A video that cannot be used: `reason` for people, `kind` to count failures by."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class VideoInfo:
    path: str
    backend: str  # "opencv" | "pyav"
    fps: float  # nominal (average) frame rate
    frames: int  # as the container reports it (may be an estimate, 0 when unknown)
    duration: float  # seconds, as the container reports it (0 when unknown)
    width: int
    height: int


class _Decoder(Protocol):
    info: VideoInfo

    def frames(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        """(timestamp in seconds, fetch RGB pixels) for every frame in presentation order."""
        ...

    def close(self) -> None: ...


class _OpenCV:
    def __init__(self, path: Path) -> None:
        self._cv2 = cv2
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise VideoError("OpenCV cannot open it", "cannot decode")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if not (math.isfinite(fps) and fps > 0) or width <= 0 or height <= 0:
            capture.release()
            raise VideoError(f"OpenCV reads no frame rate or size (fps {fps}, {width}x{height})", "cannot decode")
        self._capture = capture
        self.info = VideoInfo(str(path), "opencv", fps, max(frames, 0), max(frames, 0) / fps, width, height)

    def frames(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        cv2, capture = self._cv2, self._capture
        index = 0

        def fetch() -> np.ndarray:
            ok, image = capture.retrieve()
            if not ok or image is None:
                raise VideoError(f"OpenCV cannot convert frame {index}", "corrupt frame")
            if image.ndim == 2:
                return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
            if image.shape[2] == 4:
                return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

        while capture.grab():
            msec = capture.get(cv2.CAP_PROP_POS_MSEC)
            time = msec / 1000 if math.isfinite(msec) and msec >= 0 else index / self.info.fps
            yield time, fetch
            index += 1

    def close(self) -> None:
        self._capture.release()


class _PyAV:
    def __init__(self, path: Path) -> None:
        try:
            import av
        except ImportError as exc:  # pragma: no cover - av comes with pytorchvideo
            raise VideoError(f"PyAV is not installed ({exc})", "cannot decode") from None
        try:
            self._container = av.open(str(path))
        except Exception as exc:  # PyAV raises its own error classes for every ffmpeg failure
            raise VideoError(f"PyAV cannot open it ({exc})", "cannot decode") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError("the file has no video stream", "no video stream")
        stream = self._container.streams.video[0]
        if stream.codec_context is None:
            self._container.close()
            raise VideoError(
                "FFmpeg has no decoder for its video codec; re-encode it, e.g. to H.264", "unsupported codec"
            )
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000
        else:
            duration = 0.0
        frames = int(stream.frames or 0) or (round(duration * fps) if fps > 0 else 0)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width <= 0 or height <= 0:
            self._container.close()
            raise VideoError(f"PyAV reads no frame size ({width}x{height})", "cannot decode")
        self._stream = stream
        self.info = VideoInfo(str(path), "pyav", fps if fps > 0 else 25.0, frames, duration, width, height)

    def frames(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        start = self._stream.start_time or 0
        base = self._stream.time_base
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is not None and base is not None:
                    time = float((frame.pts - start) * base)
                else:
                    time = index / self.info.fps

                def fetch(frame=frame) -> np.ndarray:
                    image = frame.to_ndarray(format="rgb24")
                    turns = round(getattr(frame, "rotation", 0) or 0) // 90 % 4
                    # the display matrix rotates counter-clockwise by `rotation` degrees
                    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image

                yield time, fetch
                index += 1
        except VideoError:
            raise
        except Exception as exc:  # a damaged packet mid-stream: keep what was decoded
            if index == 0:
                raise VideoError(f"PyAV cannot decode any frame ({exc})", "cannot decode") from None

    def close(self) -> None:
        self._container.close()


def opencv_can_name(path: Path) -> bool:
    """Whether `path` is valid UTF-8 (a name that is not decodes to lone surrogates): OpenCV's binding
    segfaults on any other path, for reading and writing alike."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_video(path: str | Path, decoder: str = "auto") -> _Decoder:
    """Open `path` with OpenCV (`decoder="opencv"`), PyAV (`"pyav"`) or OpenCV then PyAV (`"auto"`).

    A path that is not valid UTF-8 is opened with PyAV only (`auto`), or refused (`opencv`)."""
    path = Path(os.path.abspath(path))  # (not resolve(): the path stays the one the user gave, symlinks and all)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoError(f"cannot read the file ({exc.strerror})", "unreadable") from None
    if not path.is_file():
        raise VideoError("not a regular file", "unreadable")
    if size == 0:
        raise VideoError("the file is empty (0 bytes)", "empty file")
    if decoder not in ("auto", "opencv", "pyav"):
        raise ValueError(f"decoder {decoder!r}: use auto, opencv or pyav")
    errors = []
    if not opencv_can_name(path):
        if decoder == "opencv":
            raise VideoError(
                "OpenCV cannot open a path that is not valid UTF-8 (its binding crashes on one); "
                "use --decoder pyav or auto, or rename the file or folder",
                "name not UTF-8",
            )
        decoder = "pyav"
    for name, cls in (("opencv", _OpenCV), ("pyav", _PyAV)):
        if decoder not in ("auto", name):
            continue
        try:
            return cls(path)
        except VideoError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    kinds = [e.kind for e in errors]
    kind = next((k for k in ("unsupported codec", "no video stream") if k in kinds), "cannot decode")
    raise VideoError("; ".join(e.reason for e in errors), kind)


# ---------------------------------------------------------------------------------------------------
# Sampling grids


@dataclass(frozen=True)
class Grid:
    """What one feature stream samples. Item k asks for `frames` frames at `offsets` around its anchor.

    `anchor(k) = (k + phase) / rate`; the frame times are anchor + offsets. `keep_until_last` keeps
    an item at the end of the video only when its last frame time is inside the video (HowTo100M's
    whole 16-frame clips); otherwise the anchor must be inside (one item per second the video lasts).
    """

    rate: float  # items per second
    phase: float  # anchor of item k at (k + phase) / rate
    offsets: tuple[float, ...]  # frame times relative to the anchor, ascending
    size: int  # output side: resize the short side to `size`, centre-crop `size` x `size` (0: whole frame)
    keep_until_last: bool = False

    def __post_init__(self) -> None:
        # the last guard of bounded work: options and files are checked against the same range before
        if not (math.isfinite(self.rate) and 1 / MAX_INTERVAL <= self.rate <= 1 / MIN_INTERVAL):
            raise DecembertError(
                f"sampling {self.rate:g} items per second: use one every {MIN_INTERVAL:g} to {MAX_INTERVAL:g} s"
            )

    def times(self, k: int) -> list[float]:
        anchor = (k + self.phase) / self.rate
        return [max(0.0, anchor + o) for o in self.offsets]

    def keep(self, k: int, duration: float) -> bool:
        if k == 0:
            return True
        last = self.times(k)[-1] if self.keep_until_last else (k + self.phase) / self.rate
        return last < duration


def image_grid(size: int, rate: float = 1.0) -> Grid:
    """One frame at the centre of each 1/rate s: HowTo100M's 2D features at rate 1."""
    return Grid(rate=rate, phase=0.5, offsets=(0.0,), size=size)


def frame_grid(interval: float) -> Grid:
    """Whole frames at 0, interval, 2 * interval, ... s (dense captions: every 2 s, index int(t // 2))."""
    return Grid(rate=1.0 / interval, phase=0.0, offsets=(0.0,), size=0)


def clip_grid(size: int, frames: int, fps: float, rate: float = 1.0) -> Grid:
    """A clip of `frames` frames at `fps`, centred on each 1/rate s (our 1 s grid for 3D features)."""
    offsets = tuple((j - (frames - 1) / 2) / fps for j in range(frames))
    return Grid(rate=rate, phase=0.5, offsets=offsets, size=size)


def consecutive_clip_grid(size: int, frames: int, fps: float) -> Grid:
    """Back-to-back clips of `frames` frames at `fps` (HowTo100M's 3D: 16 at 24 fps = 1.5 clips/s)."""
    return Grid(
        rate=fps / frames, phase=0.0, offsets=tuple(j / fps for j in range(frames)), size=size, keep_until_last=True
    )


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` (area filter when shrinking) and centre-crop `size` x `size`.

    `size` 0 keeps the whole frame as it is (dense captioning wants boxes in the frame's pixels)."""
    if size == 0:
        return image
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


@dataclass
class _Open:
    stream: int
    k: int
    times: list[float]
    pixels: list[np.ndarray | None]


@dataclass(frozen=True)
class Sampled:
    """A finished item: stream index, item index k, pixels (frames, size, size, 3) uint8."""

    stream: int
    k: int
    pixels: np.ndarray


@dataclass
class Decoded:
    """What the pass over the whole video found (known once `sample` is exhausted)."""

    frames: int = 0
    duration: float = 0.0
    items: tuple[int, ...] = ()  # items kept per stream


class _Pixels:
    """One decoded frame's pixels: fetched on first use, resized once per stream (`frame(stream)`)."""

    def __init__(self, fetch: Callable[[], np.ndarray], grids: Sequence[Grid]) -> None:
        self.fetch, self.grids = fetch, grids
        self.image: np.ndarray | None = None
        self.resized: dict[int, np.ndarray] = {}

    def __call__(self, stream: int) -> np.ndarray:
        if stream not in self.resized:
            if self.image is None:
                self.image = self.fetch()
            self.resized[stream] = resize_crop(self.image, self.grids[stream].size)
        return self.resized[stream]


def sample(video: _Decoder, grids: Sequence[Grid], summary: Decoded | None = None) -> Iterator[Sampled]:
    """Decode `video` once and yield every kept item of every grid, in time order per grid.

    Items whose frames all arrive are yielded as soon as their last frame is decoded; at the end of
    the video the open items a grid keeps get the last decoded frame for their missing times.
    `summary` (if given) receives the decoded frame count, duration and items kept per stream.
    Only items still waiting for a frame are held, so a frame shown for long (or a jump in the
    timestamps) costs time, not memory; a timestamp past `MAX_DURATION` is a VideoError.
    """
    period = 1.0 / video.info.fps
    next_k = [0] * len(grids)
    opened: list[_Open] = []
    emitted = [0] * len(grids)
    last: dict[int, np.ndarray] = {}  # stream -> last resized frame
    served = [False] * len(grids)  # whether a stream's items have received any frame yet
    frames, end = 0, 0.0

    def fill(item: _Open, covered: float, frame: _Pixels) -> list[np.ndarray] | None:
        """Give `item` this frame for its times before `covered`; all its frames once they are in."""
        for j, t in enumerate(item.times):
            if item.pixels[j] is None and t < covered:
                item.pixels[j] = frame(item.stream)
                served[item.stream] = True
        arrived = [p for p in item.pixels if p is not None]
        return arrived if len(arrived) == len(item.pixels) else None

    for time, fetch in video.frames():
        frames += 1
        if time > MAX_DURATION:
            raise VideoError(
                f"frame {frames - 1} is at {time:.0f} s, past {MAX_DURATION / 3600:g} h: damaged timestamps, "
                "or a video to cut into parts first",
                "too long",
            )
        covered = min(time + period, MAX_DURATION)  # this frame is on screen until about here
        end = max(end, covered)
        frame = _Pixels(fetch, grids)
        for item in list(opened):
            arrived = fill(item, covered, frame)
            if arrived is not None:
                opened.remove(item)
                emitted[item.stream] += 1
                yield Sampled(item.stream, item.k, np.stack(arrived))
        for s, grid in enumerate(grids):  # the items that start before `covered`, made one at a time
            while (times := grid.times(next_k[s]))[0] < covered:
                item = _Open(s, next_k[s], times, [None] * len(times))
                next_k[s] += 1
                arrived = fill(item, covered, frame)
                if arrived is None:
                    opened.append(item)
                else:
                    emitted[s] += 1
                    yield Sampled(s, item.k, np.stack(arrived))
        for s in range(len(grids)):  # until a stream is served, keep its latest frame for item 0
            if not served[s]:
                frame(s)
        last.update(frame.resized)
    if frames == 0:
        raise VideoError("no frame could be decoded", "cannot decode")
    for item in opened:
        grid = grids[item.stream]
        latest = last.get(item.stream)
        if grid.keep(item.k, end) and latest is not None:
            emitted[item.stream] += 1
            yield Sampled(item.stream, item.k, np.stack([p if p is not None else latest for p in item.pixels]))
    for s, grid in enumerate(grids):  # a video shorter than every request still gives item 0
        if emitted[s] == 0 and s in last:
            emitted[s] = 1
            yield Sampled(s, 0, np.stack([last[s]] * len(grid.offsets)))
    if summary is not None:
        summary.frames, summary.duration, summary.items = frames, end, tuple(emitted)
