"""MSR-VTT and MSRVTT-QA annotation files, read as distributed (../shared/DATA_FORMATS.md).

Video ids are strings `video{n}` everywhere in this package. MSRVTT-QA stores them as ints (6513);
`video_key` maps both forms, and a file that mixes the two is refused, naming a record of each.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from decembert_cli.errors import DecembertError

from .files import read_csv, read_json, record_error

SPLITS = ("train", "validate", "test")
_VIDEO = re.compile(r"video([0-9]+)")


def video_key(value: object) -> str | None:
    """`video{n}` for an int n, a digit string or `video{n}`; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10**15:
        return f"video{value}"
    if isinstance(value, str) and len(value) <= 20:  # MSR-VTT has 10,000 videos: no id is longer
        if value.isascii() and value.isdigit():
            return f"video{int(value)}"
        if _VIDEO.fullmatch(value):
            return value
    return None


@dataclass(frozen=True)
class MSRVTTVideo:
    """A video of MSRVTT_data.json: its id (video{n}), official split and category."""

    video_id: str
    split: str  # train / validate / test
    category: int


def read_msrvtt_data(path: Path) -> tuple[dict[str, MSRVTTVideo], dict[str, list[str]]]:
    """Videos by id and their captions (in file order) from MSRVTT_data.json (or *_videodatainfo.json)."""
    data = read_json(path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("videos"), list)
        or not isinstance(data.get("sentences"), list)
    ):
        raise DecembertError(f'{path}: expected MSR-VTT\'s {{"videos": [...], "sentences": [...]}}')
    videos: dict[str, MSRVTTVideo] = {}
    for i, v in enumerate(data["videos"]):
        key = video_key(v.get("video_id")) if isinstance(v, dict) else None
        if key is None or not isinstance(v.get("split"), str):
            raise record_error(path, i, 'a video needs "video_id" (video{n}) and "split"', v)
        videos[key] = MSRVTTVideo(key, v["split"], int(v.get("category", -1)))
    sentences: dict[str, list[str]] = {}
    for i, s in enumerate(data["sentences"]):
        key = video_key(s.get("video_id")) if isinstance(s, dict) else None
        if key is None or not isinstance(s.get("caption"), str) or not s["caption"].strip():
            raise record_error(path, i, 'a sentence needs "video_id" and a non-empty "caption"', s)
        if key not in videos:
            raise record_error(path, i, f"sentence of {key}, which is not among the file's videos", s)
        sentences.setdefault(key, []).append(s["caption"].strip())
    return videos, sentences


def read_1ka(path: Path) -> list[tuple[str, str]]:
    """(video_id, sentence) pairs of the 1k-A test (MSRVTT_JSFUSION_test.csv: key,vid_key,video_id,sentence)."""
    pairs = []
    for line, row in read_csv(path, ("video_id", "sentence")):
        key = video_key(row["video_id"])
        if key is None or not row["sentence"].strip():
            raise DecembertError(f"{path}, line {line}: needs a video_id (video{{n}}) and a sentence; got {row}")
        pairs.append((key, row["sentence"].strip()))
    return pairs


def read_video_list(path: Path) -> list[str]:
    """Video ids of a one-column list (MSRVTT_train.9k.csv / .7k.csv, header video_id)."""
    ids = []
    for line, row in read_csv(path, ("video_id",)):
        key = video_key(row["video_id"])
        if key is None:
            raise DecembertError(f"{path}, line {line}: '{row['video_id']}' is not a video id (video{{n}})")
        ids.append(key)
    return ids


@dataclass(frozen=True)
class QAItem:
    """One MSRVTT-QA question (`{train,val,test}_qa.json`) with its one-word answer."""

    qid: int  # the global question id
    video_id: str  # video{n}
    question: str
    answer: str
    category: int  # MSR-VTT video category (0-19), not a question type

    @property
    def qtype(self) -> str:
        """The question's first word (what / who / how / when / where)."""
        return self.question.split()[0].lower() if self.question.split() else ""


def read_qa(path: Path) -> list[QAItem]:
    """MSRVTT-QA `*_qa.json`: a list of {"answer", "category_id", "id", "question", "video_id"}."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DecembertError(f"{path}: expected a JSON list of questions, got a {type(data).__name__}")
    items = []
    forms: dict[type, int] = {}
    for i, q in enumerate(data):
        if not isinstance(q, dict):
            raise record_error(path, i, "a question must be an object", q)
        if not isinstance(q.get("question"), str) or not q["question"].strip():
            raise record_error(path, i, 'no "question"', q)
        if not isinstance(q.get("answer"), str) or not q["answer"].strip():
            raise record_error(path, i, 'the question has no "answer"', q)
        key = video_key(q.get("video_id"))
        if key is None:
            raise record_error(path, i, '"video_id" must be an int (6513) or video{n}', q)
        form = type(q["video_id"])
        forms.setdefault(form, i)
        if len(forms) > 1:
            first = min(forms.values())
            raise record_error(
                path,
                i,
                f'"video_id" is a {form.__name__} here but record {first} has a '
                f"{type(data[first]['video_id']).__name__}; write every id the same way",
                q,
            )
        qid = q.get("id", i)
        items.append(
            QAItem(
                int(qid) if isinstance(qid, int) else i,
                key,
                q["question"].strip(),
                q["answer"].strip().lower(),
                int(q.get("category_id", -1)),
            )
        )
    return items


def answer_vocabulary(train: list[QAItem], k: int) -> list[str]:
    """The `k` most frequent training answers, most frequent first (ties: alphabetical)."""
    counts = Counter(q.answer for q in train)
    return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
