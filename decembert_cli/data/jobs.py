"""Work lists of videos shared by the commands that process many videos (extract-features, dense-caption).

Inputs are video files, folders (searched recursively) or list files; ids are checked so none can
write outside the output folder; work is split into shards by position in the id-sorted list; each
shard appends to its own JSON-lines logs (videos done, failures), which survive a kill.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decembert_cli.data.video import VIDEO_EXTENSIONS
from decembert_cli.errors import DecembertError
from decembert_cli.io import MAX_ID_BYTES, atomic_write_bytes, atomic_write_text, check_store, folder_lock, safe_id


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


def unsafe_id_reason(video_id: str) -> str:
    """Why an id that `safe_id` refuses cannot name an output file, for its failure entry."""
    try:
        size = len(video_id.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: a file name in another encoding (e.g. Latin-1)
        return f"video id {video_id!r} is not valid UTF-8 (a name in another encoding)"
    if size > MAX_ID_BYTES:
        return f"video id {video_id[:40]!r}... is {size} bytes in UTF-8, over the {MAX_ID_BYTES} a file name allows"
    return f"video id {video_id!r} could write outside the output folder"


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
            raise DecembertError(
                f"{item} does not exist; pass video files, folders of videos or a list file (.txt/.csv)"
            )
    jobs: dict[str, VideoJob] = {}
    failures = []
    for video_id, path in entries:
        if not safe_id(video_id):
            failures.append(
                Failure(
                    video_id,
                    str(path),
                    "unsafe id",
                    f"{unsafe_id_reason(video_id)}; rename it",
                )
            )
        elif video_id in jobs:
            failures.append(
                Failure(
                    video_id,
                    str(path),
                    "duplicate id",
                    f"id {video_id!r} is also {jobs[video_id].path}; rename one of them",
                )
            )
        else:
            jobs[video_id] = VideoJob(video_id, path)
    return [jobs[k] for k in sorted(jobs)], failures, ignored


def shard_of(jobs: list, shard: tuple[int, int]) -> list:
    """Jobs (or failures) of shard i of n: every n-th of the id-sorted list, starting at i."""
    i, n = shard
    return jobs[i::n]


class JobLog:
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
            raise DecembertError(
                f"cannot write {self.path}: {exc.strerror}; finished videos are kept, rerun to go on"
            ) from None
        finally:
            os.close(fd)


def log_names(shard: tuple[int, int]) -> tuple[str, str]:
    """(videos log, failures log) file names for a shard: plain names when there is one shard."""
    i, n = shard
    suffix = "" if n == 1 else f".shard-{i:04d}-of-{n:04d}"
    return f"videos{suffix}.jsonl", f"failures{suffix}.jsonl"


def store_writer(out: Path, inputs: Iterable[Path], shard: tuple[int, int]) -> contextlib.AbstractContextManager[None]:
    """The one-writer lock of a store folder for this shard (shards of one run write their own logs, so each
    has its own lock; a second process on the same shard gets an error naming the first), after checking
    that no input lies inside the store, where an output could take its name."""
    check_store(out, [p for p in inputs if not Path(p).expanduser().is_dir()])
    i, n = shard
    return folder_lock(out, "" if n == 1 else f"shard-{i:04d}-of-{n:04d}")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise DecembertError(f"cannot write into {out} ({exc.strerror}); choose a writable --out folder") from None


@dataclass
class WorkPlan:
    """One shard's share of a run: what to do, what is already done, what failed before starting."""

    todo: list[VideoJob]
    done: list[VideoJob]
    failed: Counter[str]  # unusable entries of this shard (unsafe or duplicate ids), already logged
    videos: int  # in this shard, unusable entries included
    ignored: list[str]  # files skipped as not videos by extension


def plan_work(
    inputs: Iterable[Path], shard: tuple[int, int], is_done: Callable[[VideoJob], bool], failures: JobLog
) -> WorkPlan:
    """Split the inputs' videos of `shard` into done and to-do; log this shard's unusable entries.

    Failures logged by an earlier run for videos tried again now are dropped from the log first, so
    a video is listed there once, with the reason of its latest attempt."""
    jobs, bad, ignored = list_videos(inputs)
    mine = shard_of(jobs, shard)
    done = [job for job in mine if is_done(job)]
    finished = {job.video_id for job in done}
    todo = [job for job in mine if job.video_id not in finished]
    failures.forget({job.video_id for job in todo} | {f.video_id for f in bad})
    bad_here = shard_of(bad, shard)
    for failure in bad_here:
        failures.append(failure.as_dict())
    return WorkPlan(todo, done, Counter(f.kind for f in bad_here), len(mine) + len(bad_here), ignored)


def keep_settings(path: Path, settings: dict[str, Any], old: dict[str, Any] | None, what: str) -> None:
    """Write a run's `settings` to `path`, or check they equal `old`, the ones already there.

    Outputs of different settings must never mix in one folder; the error names the first key that
    differs. The toolkit's version may differ."""
    if old is None:
        atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
        return
    differ = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k) and k != "decembert_version"]
    if differ:
        key = differ[0]
        raise DecembertError(
            f"{path} was written with {key} = {old.get(key)!r}, this run has {settings.get(key)!r}; "
            f"{what} of different settings must not mix: choose another --out, or rerun with the old settings"
        )


def put_until_stopped(out: queue.Queue, message: tuple, stop: threading.Event) -> None:
    """Put `message` on a bounded queue, giving up when `stop` is set (the consumer has left)."""
    while not stop.is_set():
        try:
            out.put(message, timeout=0.2)
            return
        except queue.Full:
            continue
