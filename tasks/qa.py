"""Open-ended video QA as classification over a fixed answer vocabulary; `msrvtt-qa` binds it to MSRVTT-QA.

As the paper: the encoder reads [video][dense captions][question]; a two-layer MLP on the
mean-pooled output scores the K most frequent training answers (K = task.answers). Training
questions whose answer is outside the vocabulary are dropped; evaluation questions never are: an
out-of-vocabulary answer counts as wrong. Accuracy is reported overall and per question type (the
question's first word).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from decembert_cli.config import Count, TaskSettings
from decembert_cli.data.annotations.msrvtt import QAItem, answer_vocabulary, read_qa
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate_with
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, dataset_file
from decembert_cli.errors import DecembertError
from decembert_cli.model.encoder import EncoderOutput
from decembert_cli.protocols import DataCheck, HeadOutput, Task, TaskHead, TaskMetric

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MSRVTTQAConfig(TaskSettings):
    train: str = "train_qa.json"  # training questions (official file name)
    val: str = "val_qa.json"  # validation questions
    test: str = "test_qa.json"  # test questions
    # K: the answer vocabulary is the K most frequent training answers (1,000 / 1,500 / 4,000 in the literature)
    answers: Count = 1500
    max_question_tokens: Count = 30  # WordPiece tokens kept per question


class QADataset(torch.utils.data.Dataset):
    def __init__(
        self,
        items: list[QAItem],
        store: VideoStore,
        tokenizer: Any,
        config: MSRVTTQAConfig,
        answers: dict[str, int],
        max_video_tokens: int,
        train: bool,
    ) -> None:
        self.items, self.store, self.config, self.answers, self.train = items, store, config, answers, train
        self.tokenizer = tokenizer
        self.max_video_tokens = max_video_tokens

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        epoch, index = key
        item = self.items[int(index)]
        rng = np.random.default_rng([int(epoch), int(index)]) if self.train else None
        video_2d, video_3d = self.store.features(item.video_id)
        dense = self.store.dense_tokens(self.tokenizer, item.video_id, None, rng)
        (question,) = tokenize_captions(self.tokenizer, [item.question], self.config.max_question_tokens)
        segments = [TextSegment(ids, TokenType.DENSE) for ids in dense] + [TextSegment(question, TokenType.ASR)]
        extras = {
            "answer": self.answers.get(item.answer, -1),
            "qid": item.qid,
            "qtype": item.qtype,
            "video_id": item.video_id,
            "question": item.question,
            "answer_text": item.answer,
        }
        return EncoderSample(torch.from_numpy(video_2d), torch.from_numpy(video_3d), segments, extras=extras)

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


class QAAdapter:
    def __init__(self, config: MSRVTTQAConfig, vocabulary: list[str] | None) -> None:
        self.config = config
        self._vocabulary = vocabulary
        self._items: dict[str, list[QAItem]] = {}

    def _path(self, split: str) -> Path:
        if split not in SPLITS:
            raise DecembertError(f"split '{split}': msrvtt-qa has train, val and test")
        return dataset_file(self.config, getattr(self.config, split))

    def has_split(self, split: str) -> bool:
        return self._path(split).is_file()

    def items(self, split: str) -> list[QAItem]:
        if split not in self._items:
            self._items[split] = read_qa(self._path(split))
        return self._items[split]

    def vocabulary(self) -> list[str]:
        if self._vocabulary is None:
            if self.config.answers < 1:
                raise DecembertError(
                    f"task.answers = {self.config.answers}: the answer vocabulary needs at least one answer"
                )
            self._vocabulary = answer_vocabulary(self.items("train"), self.config.answers)
        return self._vocabulary

    def check(self) -> DataCheck:
        report = DataCheck()
        store = VideoStore(self.config)
        vocab = set(self.vocabulary()) if self.has_split("train") else None
        for split in SPLITS:
            path = self._path(split)
            if not path.is_file():
                report.files[split] = f"missing: {path}"
                continue
            report.files[split] = str(path)
            items = self.items(split)
            videos = sorted({q.video_id for q in items})
            counts = {"questions": len(items), "videos": len(videos)}
            report.details[f"{split} question types"] = dict(Counter(q.qtype for q in items).most_common())
            if vocab is not None:
                covered = sum(q.answer in vocab for q in items)
                counts["answer in vocabulary"] = covered
                report.details[f"{split} answer coverage"] = (
                    f"{100 * covered / max(1, len(items)):.2f}% of questions (K = {len(vocab)})"
                )
            lacking = [v for v in videos if not store.has_features(v)]
            counts["videos without features"] = len(lacking)
            if lacking:
                report.problems.append(
                    f"{split}: {len(lacking)} of {len(videos)} videos lack features in "
                    f"{store.dir_2d} / {store.dir_3d} (first: {lacking[0]})"
                )
            if store.dense_dir is not None:
                no_dense = [v for v in videos if store.dense_file(v) is None]
                counts["videos without dense captions"] = len(no_dense)
            report.counts[split] = counts
        if vocab is None:
            report.problems.append("no training file: the answer vocabulary (and coverage) cannot be computed")
        return report

    def dataset(self, split: str, tokenizer: Any, model: Any, *, train: bool) -> QADataset:
        store = VideoStore(self.config, (model.feature_dim_2d, model.feature_dim_3d))
        answers = {a: i for i, a in enumerate(self.vocabulary())}
        items = self.items(split)
        if train:
            used = store.training_videos([q.video_id for q in items], split)
            items = [q for q in items if q.answer in answers and q.video_id in used]
        else:
            lacking = sorted({q.video_id for q in items if not store.has_features(q.video_id)})
            if lacking:
                raise DecembertError(
                    f"{len(lacking)} {split} videos lack features in {store.dir_2d} (first: {lacking[0]}); "
                    "every evaluation question counts, so extract them first (decembert extract-features)"
                )
        return QADataset(items, store, tokenizer, self.config, answers, model.max_video_tokens, train)


class QAHead(TaskHead):
    """Two-layer MLP + softmax over the answer vocabulary, on the mean-pooled sequence."""

    def __init__(self, hidden_size: int, answers: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size),
            nn.GELU(),
            nn.LayerNorm(2 * hidden_size),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_size, answers),
        )

    def forward(self, output: EncoderOutput, batch: VideoTextBatch) -> HeadOutput:
        logits = self.mlp(output.pooled)  # (B, K)
        answer = batch.extras.get("answer")
        loss = None
        if answer is not None and bool((answer >= 0).any()):  # out-of-vocabulary answers (-1) are not targets
            known = answer >= 0
            loss = nn.functional.cross_entropy(logits[known].float(), answer[known])
        return HeadOutput({"logits": logits}, loss)


class QAMetric(TaskMetric):
    """Accuracy (%) overall and per question type; out-of-vocabulary answers count as wrong."""

    def __init__(self, vocabulary: list[str]) -> None:
        self.vocabulary = vocabulary
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def update(self, outputs: HeadOutput, batch: VideoTextBatch) -> None:
        probs = outputs.values["logits"].float().softmax(-1)
        top_p, top_i = probs.topk(min(5, probs.shape[-1]), dim=-1)
        x = batch.extras
        for i in range(probs.shape[0]):
            answer = x["answer_text"][i]
            p = int(top_i[i, 0])
            top5 = [[self.vocabulary[int(j)], round(float(q), 4)] for j, q in zip(top_i[i], top_p[i])]
            self.rows.append(
                {
                    "id": x["qid"][i].item() if torch.is_tensor(x["qid"]) else x["qid"][i],
                    "video_id": x["video_id"][i],
                    "question": x["question"][i],
                    "type": x["qtype"][i],
                    "answer": answer,
                    "prediction": self.vocabulary[p],
                    "correct": self.vocabulary[p] == answer,
                    "top5": top5,
                }
            )

    def compute(self) -> dict[str, float]:
        if not self.rows:
            return {"accuracy": 0.0}
        out = {"accuracy": 100.0 * sum(r["correct"] for r in self.rows) / len(self.rows)}
        for qtype in sorted({r["type"] for r in self.rows}):
            rows = [r for r in self.rows if r["type"] == qtype]
            out[f"accuracy_{qtype}"] = 100.0 * sum(r["correct"] for r in rows) / len(rows)
        out["oov_share"] = 100.0 * sum(r["answer"] not in set(self.vocabulary) for r in self.rows) / len(self.rows)
        return out

    def predictions(self) -> list[dict[str, Any]]:
        return list(self.rows)


class MSRVTTQA(Task):
    """MSRVTT-QA (Xu et al., 2017): open-ended questions on MSR-VTT videos, one-word answers."""

    name = "msrvtt-qa"
    version = "1.0"
    Config = MSRVTTQAConfig
    main_metric = "accuracy"
    eval_split = "test"

    def __init__(self, config: MSRVTTQAConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self._adapter = QAAdapter(config, list(state["answers"]) if state else None)

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        """The task.* keys that run this task on the sample corpus in `sample_root` (decembert sample-data)."""
        return {"root": str(Path(sample_root) / "msrvtt")}

    def adapter(self) -> QAAdapter:
        return self._adapter

    def state(self) -> dict[str, Any]:
        return {"answers": self._adapter.vocabulary()}

    def head(self, encoder: Any) -> QAHead:
        return QAHead(encoder.hidden_size, len(self._adapter.vocabulary()))

    def metric(self, split: str) -> QAMetric:
        return QAMetric(self._adapter.vocabulary())
