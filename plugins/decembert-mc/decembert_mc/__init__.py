"""msrvtt-mc: multiple-choice video-text matching on MSR-VTT, as a separately installed decembert task.

Each video of a split gets one question: its own first caption among `task.choices` - 1 captions
of other videos of the split (drawn with `task.seed`), in a shuffled order; the model picks the
candidate with the highest matching score. Training scores every (video, candidate) pair with a
binary matching loss (1 for the right caption); the metric is accuracy over questions.

It reads MSR-VTT's own MSRVTT_data.json and the stored features and dense captions of
decembert's video store, and fits decembert's Task contract (decembert_cli.protocols).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from decembert_cli.api import (
    Count,
    DataCheck,
    DecembertError,
    EncoderOutput,
    EncoderSample,
    HeadOutput,
    Seed,
    Task,
    TaskHead,
    TaskMetric,
    TaskSettings,
    TextSegment,
    TokenType,
    VideoStore,
    VideoTextBatch,
    collate_with,
    dataset_file,
    tokenize_captions,
)

__version__ = "0.1.0"
SPLITS = {"train": "train", "test": "test", "val": "validate"}  # our split -> MSR-VTT's (val last: seeds stay)


@dataclass(frozen=True)
class MCConfig(TaskSettings):
    data: str = "MSRVTT_data.json"  # MSR-VTT videos, splits and captions
    choices: Count = 5  # candidates per question (the right one included)
    seed: Seed = 0  # draws the wrong candidates and the order
    max_text_tokens: Count = 30  # WordPiece tokens kept per candidate caption


@dataclass(frozen=True)
class Question:
    video_id: str
    candidates: tuple[str, ...]
    answer: int


def read_msrvtt(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The split of each video id and its captions in file order, from MSR-VTT's MSRVTT_data.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DecembertError(f"{path} not found: set task.root (and task.data) to MSR-VTT's annotation file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json's message names the line and column
        raise DecembertError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("videos", "sentences")):
        raise DecembertError(f'{path}: expected MSR-VTT\'s {{"videos": [...], "sentences": [...]}}')
    splits: dict[str, str] = {}
    for i, video in enumerate(data["videos"]):
        key = video.get("video_id") if isinstance(video, dict) else None
        if not (isinstance(key, str) and key.startswith("video") and key[5:].isdigit()):
            raise DecembertError(f'{path}: videos[{i}] needs "video_id" as MSR-VTT\'s video<n>, got {video!r:.80}')
        if not isinstance(video.get("split"), str):
            raise DecembertError(f'{path}: videos[{i}] ({key}) needs a "split"')
        splits[key] = video["split"]
    captions: dict[str, list[str]] = {}
    for i, sentence in enumerate(data["sentences"]):
        ok = isinstance(sentence, dict) and isinstance(sentence.get("caption"), str)
        if not ok or sentence.get("video_id") not in splits:
            raise DecembertError(f'{path}: sentences[{i}] needs a "caption" and a "video_id" of the file\'s videos')
        captions.setdefault(sentence["video_id"], []).append(sentence["caption"].strip())
    return splits, captions


def questions(config: MCConfig, split: str) -> list[Question]:
    splits, sentences = read_msrvtt(dataset_file(config, config.data))
    ids = sorted((v for v, s in splits.items() if s == SPLITS[split] and v in sentences), key=lambda v: int(v[5:]))
    if len(ids) < config.choices:
        raise DecembertError(f"{split}: {len(ids)} videos, fewer than task.choices = {config.choices}")
    rng = np.random.default_rng([config.seed, list(SPLITS).index(split)])
    out = []
    for i, video in enumerate(ids):
        others = rng.choice([j for j in range(len(ids)) if j != i], size=config.choices - 1, replace=False)
        candidates = [sentences[video][0]] + [sentences[ids[j]][0] for j in others]
        order = rng.permutation(config.choices)
        out.append(Question(video, tuple(candidates[k] for k in order), int(np.argmin(order))))
    return out


class PairData(torch.utils.data.Dataset[EncoderSample]):
    """Item q * choices + k: video of question q with candidate k."""

    def __init__(
        self, items: list[Question], store: VideoStore, tokenizer: Any, config: MCConfig, max_video_tokens: int
    ) -> None:
        self.items, self.store, self.tokenizer, self.config, self.max_video_tokens = (
            items,
            store,
            tokenizer,
            config,
            max_video_tokens,
        )

    def __len__(self) -> int:
        return len(self.items) * self.config.choices

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        _, index = key
        q, k = divmod(int(index), self.config.choices)
        item = self.items[q]
        v2, v3 = self.store.features(item.video_id)
        dense = self.store.dense_tokens(self.tokenizer, item.video_id, None, None)
        (text,) = tokenize_captions(self.tokenizer, [item.candidates[k]], self.config.max_text_tokens)
        segments = [TextSegment(ids, TokenType.DENSE) for ids in dense] + [TextSegment(text, TokenType.ASR)]
        return EncoderSample(
            torch.from_numpy(v2),
            torch.from_numpy(v3),
            segments,
            extras={"question": q, "choice": k, "match": int(k == item.answer)},
        )

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


class Adapter:
    def __init__(self, config: MCConfig) -> None:
        self.config = config

    def has_split(self, split: str) -> bool:
        return split in SPLITS and bool(self.config.root) and dataset_file(self.config, self.config.data).is_file()

    def check(self) -> DataCheck:
        report = DataCheck()
        path = dataset_file(self.config, self.config.data)
        report.files["data"] = str(path) if path.is_file() else f"missing: {path}"
        if path.is_file():
            store = VideoStore(self.config)
            for split in SPLITS:
                items = questions(self.config, split)
                report.counts[split] = {
                    "questions": len(items),
                    "videos without features": sum(not store.has_features(q.video_id) for q in items),
                }
        return report

    def dataset(self, split: str, tokenizer: Any, model: Any, *, train: bool) -> PairData:
        store = VideoStore(self.config, (model.feature_dim_2d, model.feature_dim_3d))
        items = questions(self.config, split)
        if train:  # videos without features are left out, and task.train_fraction applies
            used = store.training_videos([q.video_id for q in items], split)
            items = [q for q in items if q.video_id in used]
        return PairData(items, store, tokenizer, self.config, model.max_video_tokens)


class Head(TaskHead):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden_size, 1))

    def forward(self, output: EncoderOutput, batch: VideoTextBatch) -> HeadOutput:
        score = self.score(output.pooled).squeeze(-1)  # (B,)
        match = batch.extras["match"]
        loss = nn.functional.binary_cross_entropy_with_logits(score.float(), match.float())
        return HeadOutput({"score": score}, loss)


class Accuracy(TaskMetric):
    """Accuracy (%) of picking the right candidate: the highest score among a question's candidates."""

    def __init__(self, choices: int) -> None:
        self.choices = choices
        self.reset()

    def reset(self) -> None:
        self.scores: dict[int, dict[int, float]] = {}
        self.answers: dict[int, int] = {}

    def update(self, outputs: HeadOutput, batch: VideoTextBatch) -> None:
        for q, k, m, s in zip(
            batch.extras["question"].tolist(),
            batch.extras["choice"].tolist(),
            batch.extras["match"].tolist(),
            outputs.values["score"].tolist(),
        ):
            self.scores.setdefault(q, {})[k] = s
            if m:
                self.answers[q] = k

    def compute(self) -> dict[str, float]:
        done = [q for q, s in self.scores.items() if len(s) == self.choices]
        right = sum(_best(self.scores[q]) == self.answers[q] for q in done)
        return {"accuracy": 100.0 * right / max(1, len(done)), "questions": float(len(done))}

    def predictions(self) -> list[dict[str, Any]]:
        return [
            {"question": q, "choice": _best(s), "answer": self.answers.get(q)} for q, s in sorted(self.scores.items())
        ]


class MSRVTTMultipleChoice(Task):
    name = "msrvtt-mc"
    version = __version__
    Config = MCConfig
    main_metric = "accuracy"
    eval_split = "test"

    def __init__(self, config: MCConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        return {"root": str(Path(sample_root) / "msrvtt")}

    def state(self) -> dict[str, Any]:
        return {}

    def adapter(self) -> Adapter:
        return Adapter(self.config)

    def head(self, encoder: Any) -> Head:
        return Head(encoder.hidden_size)

    def metric(self, split: str) -> Accuracy:
        return Accuracy(self.config.choices)


def _best(scores: dict[int, float]) -> int:
    """The candidate with the highest score."""
    return max(scores, key=lambda k: scores[k])
