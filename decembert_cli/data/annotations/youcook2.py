"""YouCook2 annotations (youcookii_annotations_trainval.json) and the MIL-NCE validation clip list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from decembert_cli.errors import DecembertError

from .files import read_csv, read_json, usable_ids

SUBSETS = ("training", "validation")


@dataclass(frozen=True)
class Segment:
    """An annotated segment of a YouCook2 video: its window in seconds and its sentence."""

    video_id: str
    start: float  # seconds
    end: float
    sentence: str
    index: int  # position in the video's annotation list (time order)
    segment_id: int  # the annotation's "id" (its position when it has none); two segments may share a window


@dataclass(frozen=True)
class YouCook2Video:
    """A video of youcookii_annotations_trainval.json with its segments in time order."""

    video_id: str
    duration: float
    subset: str  # training / validation
    recipe_type: str
    segments: tuple[Segment, ...]


def read_youcook2(path: Path) -> dict[str, YouCook2Video]:
    """Videos by id from `{"database": {video_id: {"duration", "subset", "recipe_type", "annotations": [...]}}}`."""
    data = read_json(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise DecembertError(f'{path}: expected YouCook2\'s {{"database": {{video_id: {{...}}}}}}')
    videos = {}
    usable = usable_ids(path, database)
    for video_id, v in database.items():
        if video_id not in usable:
            continue
        where = f'{path}, video "{video_id}"'
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("annotations"), list)
            or v.get("subset") not in (*SUBSETS, "testing")
        ):
            raise DecembertError(f'{where}: needs "subset" (training/validation) and a list of "annotations"')
        segments = []
        for i, a in enumerate(v["annotations"]):
            seg = a.get("segment") if isinstance(a, dict) else None
            if not (
                isinstance(seg, list)
                and len(seg) == 2
                and all(isinstance(x, (int, float)) for x in seg)
                and seg[0] <= seg[1]
            ):
                raise DecembertError(
                    f'{where}, annotation {i}: "segment" must be [start, end] seconds with start <= end'
                )
            sentence = a.get("sentence")
            if not isinstance(sentence, str) or not sentence.strip():
                raise DecembertError(f'{where}, annotation {i}: no "sentence"')
            segment_id = a.get("id", i)
            if not isinstance(segment_id, int) or isinstance(segment_id, bool):
                raise DecembertError(f'{where}, annotation {i}: "id" must be an integer, got {segment_id!r}')
            segments.append(Segment(video_id, float(seg[0]), float(seg[1]), sentence.strip(), i, segment_id))
        segments.sort(key=lambda s: (s.start, s.index))
        videos[video_id] = YouCook2Video(
            video_id, float(v.get("duration", 0.0)), v["subset"], str(v.get("recipe_type", "")), tuple(segments)
        )
    return videos


def read_clip_list(path: Path) -> list[tuple[str, float, float, str]]:
    """(video_id, start, end, text) of `validation_youcook.csv` (header end,start,task,text,video_id)."""
    clips = []
    for line, row in read_csv(path, ("video_id", "start", "end", "text")):
        try:
            start, end = float(row["start"]), float(row["end"])
        except ValueError:
            raise DecembertError(
                f"{path}, line {line}: start and end must be seconds; got {row['start']!r}, {row['end']!r}"
            ) from None
        if not row["video_id"] or end < start:
            raise DecembertError(f"{path}, line {line}: needs a video_id and start <= end")
        clips.append((row["video_id"], start, end, row["text"].strip()))
    usable = usable_ids(path, (c[0] for c in clips))
    return [c for c in clips if c[0] in usable]
