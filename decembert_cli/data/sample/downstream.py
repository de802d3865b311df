"""Downstream splits of the sample corpus, in MSR-VTT's and MSRVTT-QA's official formats.

`msrvtt/` holds short clips `video{n}` (6-10 s, one object of one domain handled with one of the
domain's actions, drawn as in the pre-training videos), split 70 / 10 / 20 % into train / validate /
test, with:

- `MSRVTT_data.json`: the videos (split, category) and 20 sentences each, from templates naming the
  clip's action and object;
- `MSRVTT_JSFUSION_test.csv` (one sentence per test clip, the 1k-A layout) and
  `MSRVTT_train.9k.csv` (the other clips);
- `train_qa.json`, `val_qa.json`, `test_qa.json`: per clip a "what" question whose answer is its
  object (the action is named) and a "what"/"how" question whose answer is its action (the object
  is named), so answering needs the video (or its dense captions);
- `features/2d`, `features/3d`, `dense_captions/` as in the corpus (synthetic features), or
  `videos/video{n}.mp4` for extract-features and dense-caption (`--features none`).

`youcook2/youcookii_annotations_trainval.json` annotates the corpus' own videos in YouCook2's format:
every segment with an imperative sentence naming its action and object; the last quarter of the
videos is the validation subset. Their features are the corpus' (`features/`).

A clip's plan has the corpus' plan layout, so features, videos and dense captions come from the same
functions as the pre-training videos'.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from decembert_cli.io import atomic_write_text

from .vocabulary import ADJECTIVES, BACKGROUND, DOMAINS

SPLIT_SHARES = (("train", 0.7), ("validate", 0.1), ("test", 0.2))
SENTENCES = (
    "how to {action} the {obj}",
    "a person shows how to {action} a {obj}",
    "someone is going to {action} the {obj}",
    "learning to {action} a {adj} {obj}",
    "they {action} the {obj}",
    "a clip where people {action} a {obj}",
    "a tutorial on how to {action} the {adj} {obj}",
    "a person wants to {action} a {obj}",
    "watch them {action} the {obj}",
    "time to {action} this {adj} {obj}",
)
OBJECT_QUESTIONS = ("what do they {action}?", "what does the person {action}?", "what is someone going to {action}?")
ACTION_QUESTIONS = (
    "what is done to the {obj}?",
    "how do they handle the {obj}?",
    "what does the person do with the {obj}?",
)
STEPS = (
    "{action} the {obj}",
    "{action} the {obj} and set it aside",
    "{action} some {obj}",
    "{action} the {adj} {obj} well",
    "now {action} the {obj}",
    "carefully {action} the {obj}",
)
YOUCOOK2_FILE = "youcookii_annotations_trainval.json"
CLIP_INDEX_BASE = 100000  # clip n uses background index CLIP_INDEX_BASE + n (distinct from the corpus videos)


def clip_id(n: int) -> str:
    return f"video{n}"


def clip_plans(seed: int, clips: int) -> list[dict]:
    """Plans of the clips (the layout of `corpus._plan_video`, one segment starting at 0)."""

    plans = []
    for n in range(clips):
        rng = np.random.default_rng([seed, 3, n])
        d = int(rng.integers(len(DOMAINS)))
        domain = DOMAINS[d]
        objects = [domain.objects[i] for i in rng.choice(len(domain.objects), size=4, replace=False)]
        obj, action = objects[0], str(rng.choice(domain.actions))
        length = int(rng.integers(600, 1001))  # centiseconds
        combos = [(t, a) for t in range(len(SENTENCES)) for a in range(len(ADJECTIVES))]
        picks = rng.choice(len(combos), size=20, replace=False)
        sentences = [
            SENTENCES[combos[p][0]].format(action=action, obj=obj, adj=ADJECTIVES[combos[p][1]]) for p in picks
        ]
        plans.append(
            {
                "index": CLIP_INDEX_BASE + n,
                "id": clip_id(n),
                "domain": d,
                "objects": objects,
                "segments": [(0, length, obj, action)],
                "seconds": math.ceil(length / 100),
                "sentences": sentences,
                "questions": [
                    (str(rng.choice(OBJECT_QUESTIONS)).format(action=action), obj),
                    (str(rng.choice(ACTION_QUESTIONS)).format(obj=obj), action),
                ],
                "background": [str(b) for b in rng.choice(BACKGROUND, size=2, replace=False)],
                "dense_seed": int(rng.integers(2**31)),
            }
        )
    return plans


def clip_split(n: int, clips: int) -> str:
    """train for the first 70 % of the clips, then validate (10 %), then test."""
    edge = 0.0
    for name, share in SPLIT_SHARES:
        edge += share * clips
        if n < round(edge):
            return name
    return SPLIT_SHARES[-1][0]


def annotation_files(plans: list[dict]) -> dict[str, str]:
    """Relative path -> text of every annotation file of `msrvtt/`."""
    clips = len(plans)
    videos: list[dict[str, Any]] = []
    sentences: list[dict[str, Any]] = []
    qa: dict[str, list[dict[str, Any]]] = {"train": [], "validate": [], "test": []}
    qid = 0
    for n, plan in enumerate(plans):
        split = clip_split(n, clips)
        seconds = plan["segments"][0][1] / 100
        videos.append(
            {
                "category": plan["domain"],
                "url": f"https://example.invalid/sample/{plan['id']}",
                "video_id": plan["id"],
                "start time": 0.0,
                "end time": seconds,
                "split": split,
                "id": n,
            }
        )
        for text in plan["sentences"]:
            sentences.append({"caption": text, "video_id": plan["id"], "sen_id": len(sentences)})
        for question, answer in plan["questions"]:
            qa[split].append(
                {"answer": answer, "category_id": plan["domain"], "id": qid, "question": question, "video_id": n}
            )
            qid += 1
    files = {
        "MSRVTT_data.json": json.dumps(
            {"info": {"description": "decembert sample clips"}, "videos": videos, "sentences": sentences}
        )
    }
    for split, name in (("train", "train_qa.json"), ("validate", "val_qa.json"), ("test", "test_qa.json")):
        files[name] = json.dumps(qa[split])
    test = [p for n, p in enumerate(plans) if clip_split(n, clips) == "test"]
    files["MSRVTT_JSFUSION_test.csv"] = _csv(
        [["key", "vid_key", "video_id", "sentence"]]
        + [[f"ret{i}", f"msr{p['index'] - CLIP_INDEX_BASE}", p["id"], p["sentences"][0]] for i, p in enumerate(test)]
    )
    files["MSRVTT_train.9k.csv"] = _csv(
        [["video_id"]] + [[p["id"]] for n, p in enumerate(plans) if clip_split(n, clips) != "test"]
    )
    return files


def _csv(rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write(out_dir: Path, plans: list[dict], write_clip: Callable[[dict, Path], None]) -> None:
    """Write `msrvtt/`: every clip through `write_clip(plan, folder)`, then the annotation files."""
    folder = Path(out_dir) / "msrvtt"
    for plan in plans:
        write_clip(plan, folder)
    for name, text in annotation_files(plans).items():
        atomic_write_text(folder / name, text)


def youcook2_annotations(plans: list[dict], seed: int) -> str:
    """YouCook2's trainval JSON for the corpus' videos (`corpus` plans): one sentence per segment."""

    database = {}
    validation_from = len(plans) - max(1, len(plans) // 4) if len(plans) > 1 else len(plans)
    for n, plan in enumerate(plans):
        rng = np.random.default_rng([seed, 4, n])
        annotations = []
        for i, (s0, s1, obj, action) in enumerate(plan["segments"]):
            sentence = str(rng.choice(STEPS)).format(action=action, obj=obj, adj=str(rng.choice(ADJECTIVES)))
            annotations.append({"segment": [round(s0 / 100, 2), round(s1 / 100, 2)], "id": i, "sentence": sentence})
        database[plan["id"]] = {
            "duration": float(plan["seconds"]),
            "subset": "training" if n < validation_from else "validation",
            "recipe_type": str(plan["task_id"]),
            "annotations": annotations,
            "video_url": f"https://example.invalid/sample/{plan['id']}",
        }
    return json.dumps({"database": database})
