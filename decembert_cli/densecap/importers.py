"""The `import` backend: dense captions other tools already wrote, read into our store.

Three formats (../shared/DATA_FORMATS.md), told apart by their content:

- densecap of Johnson et al. (`run_model.lua -output_json`): `{"results": [{"img_name", "boxes":
  [[x, y, w, h]], "scores", "captions"}]}`; boxes become x1, y1, x2, y2, scores are kept;
- densecap with context of Yang et al. (the captioner the paper used): `{image_file: {"boxes":
  [[x1, y1, x2, y2]], "logprobs", "captions"}}`; the log-probability is kept as the score;
- the paper's per-video `.npy` (`{video_id}.npy`, an object array of caption lists, entry k at
  k * interval s); these have no boxes and no scores.

Both JSON formats caption image files, one per extracted frame. Their names say the video and the
frame: by default `{video_id}/{n}.jpg` or `{video_id}_{n}.jpg` (any extension, `-` also accepted),
or a bare `{n}.jpg` (densecap's `run_model.lua` keeps only the base name) whose video is
`--option video=ID` or else the JSON file's name (`{video_id}.json`),
where `n` numbers the frames extracted every `interval` s from `frame_base` (1, as
`ffmpeg -i v.mp4 -vf fps=1/2 v/%06d.jpg` numbers them), so frame n is at (n - frame_base) * interval
s. `--option pattern=REGEX` gives another naming: a regular expression searched in the name with the
groups `video` and either `frame` (a number as above) or `time` (seconds).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decembert_cli.data.densecap import read_paper_npy
from decembert_cli.data.howto100m import BadVideo
from decembert_cli.data.jobs import Failure
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.io import decode_json

DEFAULT_PATTERN = r"(?:^|[\\/])(?P<video>[^\\/]+?)(?:[\\/]|[_-](?=\d+\.\w+$))(?P<frame>\d+)\.\w+$"
_BARE = re.compile(r"^(?P<frame>\d+)\.\w+$")  # a frame file name alone (densecap writes base names)
FORMATS = {
    "johnson": "densecap (Johnson et al.)",
    "yang": "densecap with context (Yang et al.)",
    "paper": "paper per-video .npy",
}


@dataclass
class ImportedVideo:
    video_id: str
    source: str  # the file it was read from
    format: str  # a key of FORMATS
    frames: list[tuple[float, list[Region]]] = field(default_factory=list)  # (time, regions), by time


class Importer:
    """Reads the foreign files given as inputs; see the module doc."""

    def __init__(self, options: dict[str, Any]) -> None:
        unknown = set(options) - {"pattern", "frame_base", "video"}
        if unknown:
            raise DecembertError(
                f"'{sorted(unknown)[0]}': the import backend takes only "
                "--option pattern=REGEX, frame_base=N and video=ID"
            )
        self.video = options.get("video") or None
        text = options.get("pattern") or DEFAULT_PATTERN
        try:
            self.pattern = re.compile(text)
        except re.error as exc:
            raise DecembertError(f"--option pattern={text}: not a regular expression ({exc})") from None
        groups = set(self.pattern.groupindex)
        if "video" not in groups or not groups & {"frame", "time"}:
            raise DecembertError(
                f"--option pattern={text}: name the groups (?P<video>...) and (?P<frame>...) or (?P<time>...)"
            )
        try:
            self.frame_base = int(options.get("frame_base", 1))
        except ValueError:
            raise DecembertError(
                f"--option frame_base={options['frame_base']}: use an integer (1 for ffmpeg's numbering)"
            ) from None

    def meta(self) -> dict[str, Any]:
        return {
            "backend": "import",
            "model": None,
            "model_sha256": None,
            "pattern": self.pattern.pattern,
            "frame_base": self.frame_base,
            "video": self.video,
        }

    def files(self, inputs: Iterable[Path]) -> tuple[list[Path], list[str]]:
        """The .json and .npy files among `inputs` (folders searched recursively), and the files ignored."""
        found: list[Path] = []
        ignored: list[Path] = []
        for path in (Path(p).expanduser() for p in inputs):
            if path.is_dir():
                for p in sorted(q for q in path.rglob("*") if q.is_file()):
                    (found if p.suffix.lower() in (".json", ".npy") else ignored).append(p)
            elif path.is_file():
                found.append(path)
            else:
                raise DecembertError(f"{path}: no such file or folder")
        return found, [str(p) for p in ignored]

    def videos(self, path: Path, interval: float) -> Iterator[ImportedVideo | Failure]:
        """The videos in one foreign file, or failures naming what in it cannot be read."""
        if path.suffix.lower() == ".npy":
            yield from self._paper(path, interval)
            return
        try:
            data = decode_json(path.read_text(encoding="utf-8"), path.name, huge_ints=True)  # a bad entry fails alone
        except (OSError, UnicodeDecodeError, DecembertError) as exc:
            yield Failure(path.stem, str(path), "unreadable", f"not a JSON file ({exc})")
            return
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            entries = [(e.get("img_name") if isinstance(e, dict) else None, e) for e in data["results"]]
            yield from self._images(path, "johnson", entries, interval)
        elif isinstance(data, dict) and data and all(isinstance(v, dict) and "captions" in v for v in data.values()):
            yield from self._images(path, "yang", list(data.items()), interval)
        else:
            yield Failure(
                path.stem,
                str(path),
                "unknown format",
                'neither densecap\'s {"results": [...]} nor {image_file: {"boxes", "logprobs", "captions"}}',
            )

    def _paper(self, path: Path, interval: float) -> Iterator[ImportedVideo | Failure]:
        try:
            frames = read_paper_npy(path)
        except BadVideo as exc:
            yield Failure(path.stem, str(path), exc.kind, str(exc))
            return
        regions = [[Region(c, None) for c in frame] for frame in frames]
        yield ImportedVideo(path.stem, str(path), "paper", [(round(k * interval, 3), r) for k, r in enumerate(regions)])

    def _where(self, name: str, interval: float, file_video: str) -> tuple[str, float] | None:
        match = self.pattern.search(name)
        video = match.group("video") if match is not None else None
        if match is None and self.pattern.pattern == DEFAULT_PATTERN and _BARE.search(name):
            match, video = _BARE.search(name), self.video or file_video  # densecap keeps only the image's base name
        if match is None or not video:
            return None
        groups = match.groupdict()
        try:
            if groups.get("time") is not None:
                return video, float(groups["time"])
            return video, (int(groups["frame"]) - self.frame_base) * interval
        except (ValueError, OverflowError):  # not a number, or one too large for a time
            return None

    def _images(
        self, path: Path, fmt: str, entries: list[tuple[Any, Any]], interval: float
    ) -> Iterator[ImportedVideo | Failure]:
        by_video: dict[str, dict[float, list[Region]]] = defaultdict(dict)
        bad: dict[str, str] = {}
        unmatched: list[str] = []
        for name, entry in entries:
            where = self._where(str(name), interval, path.stem) if isinstance(name, str) else None
            if where is None:
                unmatched.append(str(name))
                continue
            video_id, t = where
            if video_id in bad:
                continue
            try:
                if t < 0 or not math.isfinite(t):
                    raise ValueError(f"frame time {t} s (check --option frame_base)")
                regions = _regions(entry, fmt)
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                bad[video_id] = f"{name}: {exc}"
                continue
            if round(t, 3) in by_video[video_id]:
                bad[video_id] = f"{name}: a second image for the frame at {t:g} s"
                continue
            by_video[video_id][round(t, 3)] = regions
        if unmatched:
            yield Failure(
                path.stem,
                str(path),
                "unmatched image name",
                f"{len(unmatched)} image names (first: {unmatched[0]!r}) "
                f"do not match --option pattern={self.pattern.pattern}",
            )
        for video_id, reason in bad.items():
            yield Failure(video_id, str(path), "bad entry", reason)
        for video_id, frames in by_video.items():
            if video_id not in bad:
                yield ImportedVideo(video_id, str(path), fmt, sorted(frames.items()))


def _regions(entry: Any, fmt: str) -> list[Region]:
    """The regions of one image's entry; ValueError/TypeError/KeyError name what is wrong."""
    captions, boxes = entry["captions"], entry["boxes"]
    scores = entry.get("scores" if fmt == "johnson" else "logprobs")
    if not isinstance(captions, list) or not isinstance(boxes, list) or len(boxes) != len(captions):
        raise ValueError(
            f"{len(boxes) if isinstance(boxes, list) else '?'} boxes "
            f"for {len(captions) if isinstance(captions, list) else '?'} captions"
        )
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(captions)):
        raise ValueError(f"{'scores' if fmt == 'johnson' else 'logprobs'} must be a list, one per caption")
    out = []
    for i, (caption, box) in enumerate(zip(captions, boxes)):
        a, b, c, d = (float(v) for v in box)
        xyxy = (a, b, a + c, b + d) if fmt == "johnson" else (a, b, c, d)  # Johnson: x, y, w, h
        if not all(math.isfinite(v) for v in xyxy) or xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
            raise ValueError(f"box {i} {box} is not a box")
        out.append(Region(str(caption), xyxy, None if scores is None else float(scores[i])))
    return out


def importer(model: str | None, device: Any, autocast: Any, options: dict[str, Any]) -> Importer:
    """The `import` backend; its inputs are foreign dense-caption files."""
    if model:
        raise DecembertError("--model: the import backend has no model; give the files to import as the inputs")
    return Importer(options)
