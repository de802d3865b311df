"""Video captioning on the shared encoder; `msrvtt-caption` (sentences) and `youcook2-caption` (paragraphs).

The sequence is [video][dense captions][caption] under the seq2seq mask of
`decembert_cli.model.generation` (bidirectional over video and context, causal over the caption);
the caption is learnt by next-token prediction through BERT's MLM head (tied to the word
embeddings; loaded from the pre-training checkpoint when fine-tuning from one). Evaluation
generates with batched beam search (task.beam_size, default 5; task.length_penalty,
task.no_repeat_ngram, task.max_length; cached keys and values unless task.use_cache=false) and
scores with pycocoevalcap's BLEU@4, METEOR, ROUGE-L and CIDEr-D (`decembert_cli.metrics.captions`).

- msrvtt-caption: trains on every caption of the train split's videos (MSRVTT_data.json), generates
  one caption per test video and scores it against all its references (20 in MSR-VTT).
- youcook2-caption: one caption per annotated segment (features and dense captions cut to it);
  scored at paragraph level as MART: per validation video its reference paragraph (the segment
  sentences in time order, joined by a space) against the predicted one (the segment predictions
  joined by ". "), both lowered and reduced to letters; a video without predictions scores as an
  empty paragraph. Also the repetition R@4 of the predicted paragraphs.

Scoring a predictions file (`evaluate TASK --predictions FILE`): every clip of the split predicted exactly
once, by a safe video id (`common.check_predicted_once`, `common.prediction_id`); `task.allow_partial`
(`--allow-partial`) scores a file that leaves clips out, those as empty captions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from decembert_cli.config import Count, NonNegative, NonNegativeInt, TaskSettings
from decembert_cli.data.annotations.msrvtt import read_msrvtt_data
from decembert_cli.data.annotations.youcook2 import read_youcook2
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate_with
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, dataset_file
from decembert_cli.errors import DecembertError
from decembert_cli.metrics.captions import caption_scores, check_java, paragraph, repetition_at_4
from decembert_cli.model.encoder import EncoderOutput
from decembert_cli.model.generation import Decoding, generate, seq2seq_mask
from decembert_cli.model.heads import MLMHead
from decembert_cli.protocols import DataCheck, HeadOutput, TaskDataset, TaskHead, TaskMetric

from .common import ClipTask, check_predicted_once, prediction_id
from .retrieval import Clip

IGNORE = -100


@dataclass(frozen=True)
class CaptionSettings(TaskSettings):
    max_caption_tokens: Count = 30  # WordPiece tokens of a training caption kept
    beam_size: Count = 5  # beam search width (1: greedy)
    max_length: Count = 20  # most tokens generated per caption, the closing [SEP] included
    length_penalty: NonNegative = 1.0  # alpha: beams compare sum log p / length ** alpha
    no_repeat_ngram: NonNegativeInt = 0  # n > 0: no n-gram twice in a caption
    use_cache: bool = True  # decode with cached keys/values (false: re-encode every step; same captions, slower)
    meteor: bool = True  # METEOR runs a JVM with 2 GB; false leaves it out
    # scoring a predictions file (evaluate --allow-partial): clips it leaves out score as empty captions
    # instead of being an error
    allow_partial: bool = False


@dataclass
class CaptionData:
    clips: list[Clip]
    captions: list[list[str]]  # per clip, its reference captions (training: one sample each)


class CaptionTrainData(torch.utils.data.Dataset):
    """Item (epoch, i): caption i with its clip, dense captions drawn anew each epoch."""

    def __init__(
        self, data: CaptionData, store: VideoStore, tokenizer: Any, settings: CaptionSettings, max_video_tokens: int
    ) -> None:
        self.pairs = [(c, text) for c, texts in enumerate(data.captions) for text in texts]
        self.data, self.store, self.tokenizer, self.settings, self.max_video_tokens = (
            data,
            store,
            tokenizer,
            settings,
            max_video_tokens,
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        epoch, index = key
        c, text = self.pairs[int(index)]
        rng = np.random.default_rng([int(epoch), int(index)])
        sample = _context(self.store, self.tokenizer, self.settings, self.data.clips[c], rng)
        (caption,) = tokenize_captions(self.tokenizer, [text], self.settings.max_caption_tokens)
        start = 1 + sum(len(seg.ids) + 1 for seg in sample.segments)  # [CLS], then each segment and its [SEP]
        sample.segments.append(TextSegment(caption, TokenType.ASR))
        sample.extras = {"caption_start": start}
        return sample

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


class CaptionEvalData(torch.utils.data.Dataset):
    """Item i: clip i's context (video and dense captions), for generation."""

    def __init__(
        self, data: CaptionData, store: VideoStore, tokenizer: Any, settings: CaptionSettings, max_video_tokens: int
    ) -> None:
        self.data, self.store, self.tokenizer, self.settings, self.max_video_tokens = (
            data,
            store,
            tokenizer,
            settings,
            max_video_tokens,
        )

    def __len__(self) -> int:
        return len(self.data.clips)

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        _, index = key
        sample = _context(self.store, self.tokenizer, self.settings, self.data.clips[int(index)], None)
        sample.extras = {"clip": int(index)}
        return sample

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


def _context(
    store: VideoStore, tokenizer: Any, settings: CaptionSettings, clip: Clip, rng: np.random.Generator | None
) -> EncoderSample:
    v2, v3 = store.features(clip.video_id, clip.window)
    dense = store.dense_tokens(tokenizer, clip.video_id, clip.window, rng)
    return EncoderSample(torch.from_numpy(v2), torch.from_numpy(v3), [TextSegment(x, TokenType.DENSE) for x in dense])


class CaptionHead(TaskHead):
    """BERT's MLM head, tied to the word embeddings, predicting each caption token from the position before it."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.lm = MLMHead(encoder.bert.config, encoder.word_embeddings)

    def from_pretraining(self, state: dict[str, torch.Tensor]) -> bool:
        mine = {k[len("mlm.") :]: v for k, v in state.items() if k.startswith("mlm.")}
        if mine:
            self.lm.load_state_dict(mine)
        return bool(mine)

    def encoder_kwargs(self, batch: VideoTextBatch) -> dict[str, Any]:
        start = batch.extras.get("caption_start")
        return {} if start is None else {"attention_mask": seq2seq_mask(batch.video_mask, batch.text_mask, start)}

    def target_count(self, batch: VideoTextBatch) -> torch.Tensor:
        """Tokens predicted: each caption's tokens and its closing [SEP]."""
        start = batch.extras.get("caption_start")
        return (batch.text_mask.sum(1) - start).sum() if start is not None else torch.tensor(batch.batch_size)

    def forward(self, output: EncoderOutput, batch: VideoTextBatch) -> HeadOutput:
        start = batch.extras.get("caption_start")
        if start is None:
            return HeadOutput()
        text = output.text  # (B, Lt, H)
        lt = text.shape[1]
        positions = torch.arange(lt, device=text.device)[None]  # (1, Lt)
        # position p predicts token p + 1 for p from the caption's start - 1 to its closing [SEP] - 1
        predicts = (positions >= start[:, None] - 1) & (positions < batch.text_mask.sum(1, keepdim=True) - 1)
        targets = torch.cat([batch.text_ids[:, 1:], torch.full_like(batch.text_ids[:, :1], IGNORE)], dim=1).masked_fill(
            ~predicts, IGNORE
        )
        chosen = targets != IGNORE
        logits = self.lm(text[chosen])  # (N, vocab)
        loss_sum = nn.functional.cross_entropy(logits.float(), targets[chosen], reduction="sum")
        return HeadOutput({}, loss_sum / max(int(chosen.sum()), 1))  # per token (target_count)


class CaptionMetric(TaskMetric):
    """Sentence captioning (one caption per key against its references) or MART paragraphs (youcook2)."""

    def __init__(
        self, data: CaptionData, paragraphs: bool, meteor: bool, protocol: dict[str, Any], allow_partial: bool = False
    ) -> None:
        self.data, self.paragraphs, self.meteor, self._protocol = data, paragraphs, meteor, protocol
        self.allow_partial = allow_partial
        self.reset()

    def reset(self) -> None:
        self.predicted: dict[int, str] = {}

    def add(self, clip: int, caption: str) -> None:
        self.predicted[clip] = caption

    def update(self, outputs: HeadOutput, batch: VideoTextBatch) -> None:
        for clip, caption in zip(batch.extras["clip"].tolist(), outputs.values["captions"]):
            self.add(int(clip), caption)

    def load(self, rows: list[dict[str, Any]], source: str) -> None:
        """Predictions from a predictions.jsonl (as `predictions()` writes them), matched by (video id,
        segment id) when a row has "segment", else by (video id, window). Every clip is predicted exactly
        once (unless `allow_partial`: missing ones score as empty)."""
        by_segment: dict[tuple[Any, Any], list[int]] = {}
        by_window: dict[tuple[Any, Any], list[int]] = {}
        for i, c in enumerate(self.data.clips):
            if c.segment is not None:
                by_segment.setdefault((c.video_id, c.segment), []).append(i)
            span = None if c.window is None else tuple(round(x, 3) for x in c.window)
            by_window.setdefault((c.video_id, span), []).append(i)
        lines: dict[int, list[int]] = {}
        for n, row in enumerate(rows, start=1):
            where = f"{source}, line {n}"
            video = prediction_id(row, "video_id", where)
            if not isinstance(row.get("caption"), str):
                raise DecembertError(f'{where}: needs "caption", a string')
            segment = row.get("segment")
            if segment is not None:
                if not isinstance(segment, int) or isinstance(segment, bool):
                    raise DecembertError(
                        f'{where}: "segment" must be an integer (the annotation\'s "id") or null, '
                        f"got {json.dumps(segment)[:60]}"
                    )
                key: tuple[Any, Any] = (video, segment)
                index = by_segment
            else:
                window = row.get("window")
                if window is not None and not (
                    isinstance(window, list)
                    and len(window) == 2
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in window)
                ):
                    raise DecembertError(
                        f'{where}: "window" must be [start, end] in seconds or null, got {json.dumps(window)[:60]}'
                    )
                key, index = (
                    (video, None if window is None else tuple(round(float(x), 3) for x in window)),
                    by_window,
                )
            if key not in index:
                raise DecembertError(f"{where}: no clip {key[0]} {key[1] if key[1] is not None else ''} in this split")
            if len(index[key]) > 1:  # YouCook2: two annotated segments of one window (or of one id)
                raise DecembertError(
                    f"{where}: {len(index[key])} clips of {video} have the segment id {segment}; "
                    "give each annotated segment its own id"
                    if index is by_segment
                    else f"{where}: {len(index[key])} clips of {video} have the window {list(key[1] or [])}; "
                    'give "segment" (the annotation\'s id) to say which one'
                )
            clip = index[key][0]
            lines.setdefault(clip, []).append(n)
            self.add(clip, row["caption"])
        check_predicted_once(
            lines, range(len(self.data.clips)), source, self._clip_name, allow_partial=self.allow_partial
        )

    def _clip_name(self, i: int) -> str:
        c = self.data.clips[i]
        if c.segment is not None:
            return f"{c.video_id} segment {c.segment}"
        return c.video_id if c.window is None else f"{c.video_id} window {list(c.window)}"

    def compute(self) -> dict[str, float]:
        if not self.paragraphs:
            refs = {c.video_id: self.data.captions[i] for i, c in enumerate(self.data.clips)}
            preds = {self.data.clips[i].video_id: p for i, p in self.predicted.items()}
            scores = caption_scores(refs, preds, meteor=self.meteor)
            # a model that writes one caption for every clip can still score a high BLEU against templated
            # references (closest-reference brevity penalty): the share of distinct captions shows it
            scores["distinct"] = 100.0 * len(set(preds.values())) / len(preds) if preds else 0.0
            return scores
        videos: dict[str, list[int]] = {}
        for i, c in enumerate(self.data.clips):
            videos.setdefault(c.video_id, []).append(i)
        refs, preds, repetition = {}, {}, []
        for video, clips in videos.items():
            clips.sort(key=lambda i: self.data.clips[i].window or (0.0, 0.0))
            refs[video] = [paragraph([self.data.captions[i][0] for i in clips], " ")]
            sentences = [self.predicted[i] for i in clips if i in self.predicted]
            preds[video] = paragraph(sentences, ". ") if sentences else ""
            if sentences:  # MART averages R@4 over the videos with predictions
                repetition.append(repetition_at_4(sentences))
        scores = caption_scores(refs, preds, tokenize=False, meteor=self.meteor)
        scores["R@4"] = 100.0 * float(np.mean(repetition)) if repetition else 0.0
        return scores

    def protocol(self) -> dict[str, Any]:
        return {**self._protocol, "items": len(self.data.clips), "predicted": len(self.predicted)}

    def predictions(self) -> list[dict[str, Any]]:
        rows = []
        for i, c in enumerate(self.data.clips):
            if i in self.predicted:
                row: dict[str, Any] = {"video_id": c.video_id, "window": list(c.window) if c.window else None}
                if c.segment is not None:
                    row["segment"] = c.segment
                rows.append({**row, "caption": self.predicted[i], "references": self.data.captions[i]})
        return rows


class CaptionTask(ClipTask):
    """What both captioning tasks share; subclasses read their files into `CaptionData` (`read`)."""

    main_metric = "CIDEr-D"
    paragraphs = False

    def dataset(self, split: str, tokenizer: Any, model: Any, *, train: bool) -> torch.utils.data.Dataset:
        store = VideoStore(self.config, (model.feature_dim_2d, model.feature_dim_3d))
        data = self.cached(split)
        lacking = sorted({c.video_id for c in data.clips if not store.has_features(c.video_id)})
        if train:
            used = store.training_videos([c.video_id for c in data.clips], split)
            keep = [i for i, c in enumerate(data.clips) if c.video_id in used]
            data = CaptionData([data.clips[i] for i in keep], [data.captions[i] for i in keep])
        elif lacking:
            raise DecembertError(
                f"{len(lacking)} {split} videos lack features in {store.dir_2d} "
                f"(first: {lacking[0]}); extract them first"
            )
        cls = CaptionTrainData if train else CaptionEvalData
        return cls(data, store, tokenizer, self.config, model.max_video_tokens)

    def head(self, encoder: Any) -> CaptionHead:
        return CaptionHead(encoder)

    def metric(self, split: str) -> CaptionMetric:
        c = self.config
        decoding = f"beam {c.beam_size}, length penalty {c.length_penalty}, max length {c.max_length}" + (
            f", no repeated {c.no_repeat_ngram}-grams" if c.no_repeat_ngram else ""
        )
        protocol = {
            "split": split,
            "decoding": decoding,
            "scoring": "MART paragraphs" if self.paragraphs else "sentences vs all references",
        }
        return CaptionMetric(self.cached(split), self.paragraphs, c.meteor, protocol, c.allow_partial)

    def decoding(self) -> Decoding:
        c = self.config
        return Decoding(
            beam_size=c.beam_size,
            max_length=c.max_length,
            length_penalty=c.length_penalty,
            no_repeat_ngram=c.no_repeat_ngram,
            use_cache=c.use_cache,
        )

    def evaluate(
        self,
        model: Any,
        data: TaskDataset,
        metric: TaskMetric,
        batch_size: int,
        device: torch.device,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Generate a caption for every clip, batched across clips."""
        assert isinstance(data, CaptionEvalData) and isinstance(metric, CaptionMetric), "this task's own data"
        if not self.paragraphs or self.config.meteor:
            check_java()  # fail before generating, not after (paragraphs without METEOR need no Java)
        tok = data.tokenizer
        allowed = torch.ones(len(tok), dtype=torch.bool, device=device)
        allowed[[i for i in tok.all_special_ids if i != tok.sep_token_id]] = False
        vocab = model.head.lm.bias.shape[0]
        allowed = torch.cat([allowed, torch.zeros(max(0, vocab - len(tok)), dtype=torch.bool, device=device)])[:vocab]
        for first in range(0, len(data), batch_size):
            indices = list(range(first, min(len(data), first + batch_size)))
            batch = data.collate([data[(0, i)] for i in indices]).to(device)
            found = generate(
                model.encoder, model.head.lm, batch, self.decoding(), eos_id=tok.sep_token_id, allowed=allowed
            )
            for i, (tokens, _score) in zip(indices, found):
                metric.add(i, tok.decode(tokens, skip_special_tokens=True).strip())
            if progress is not None:
                progress(indices[-1] + 1, len(data))

    def _check(self, report: DataCheck, splits: tuple[str, ...]) -> None:
        store = VideoStore(self.config)
        for split in splits:
            if not self.has_split(split):
                continue
            data = self.cached(split)
            videos = sorted({c.video_id for c in data.clips})
            lacking = [v for v in videos if not store.has_features(v)]
            report.counts[split] = {
                "clips": len(data.clips),
                "captions": sum(map(len, data.captions)),
                "videos": len(videos),
                "videos without features": len(lacking),
            }
            if lacking:
                report.problems.append(
                    f"{split}: {len(lacking)} of {len(videos)} videos lack features in {store.dir_2d} "
                    f"(first: {lacking[0]})"
                )


@dataclass(frozen=True)
class MSRVTTCaptionConfig(CaptionSettings):
    data: str = "MSRVTT_data.json"  # videos, splits (train / validate / test) and their 20 captions


class MSRVTTCaption(CaptionTask):
    """MSR-VTT sentence captioning (Xu et al., 2016): test videos against all their references."""

    name = "msrvtt-caption"
    Config = MSRVTTCaptionConfig
    eval_split = "test"
    SPLITS = {"train": "train", "val": "validate", "test": "test"}

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        return {"root": str(Path(sample_root) / "msrvtt"), "beam_size": 2, "max_length": 6, "meteor": False}

    def has_split(self, split: str) -> bool:
        return split in self.SPLITS and dataset_file(self.config, self.config.data).is_file()

    def read(self, split: str) -> CaptionData:
        if split not in self.SPLITS:
            raise DecembertError(f"split '{split}': msrvtt-caption has train, val and test")
        videos, sentences = read_msrvtt_data(dataset_file(self.config, self.config.data))
        ids = sorted(
            (v for v, info in videos.items() if info.split == self.SPLITS[split] and v in sentences),
            key=lambda v: int(v[5:]),
        )
        return CaptionData([Clip(v, None) for v in ids], [sentences[v] for v in ids])

    def check(self) -> DataCheck:
        report = DataCheck()
        path = dataset_file(self.config, self.config.data)
        report.files["videos and captions"] = str(path) if path.is_file() else f"missing: {path}"
        self._check(report, ("train", "val", "test"))
        return report


@dataclass(frozen=True)
class YouCook2CaptionConfig(CaptionSettings):
    annotations: str = "youcookii_annotations_trainval.json"  # YouCook2 train + validation annotations


class YouCook2Caption(CaptionTask):
    """YouCook2 paragraph captioning (Zhou et al., 2018), evaluated as MART (Lei et al., 2020)."""

    name = "youcook2-caption"
    Config = YouCook2CaptionConfig
    eval_split = "val"
    paragraphs = True

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        return {
            "root": str(sample_root),
            "annotations": "youcook2/youcookii_annotations_trainval.json",
            "beam_size": 2,
            "max_length": 6,
            "meteor": False,
        }

    def has_split(self, split: str) -> bool:
        return split in ("train", "val") and dataset_file(self.config, self.config.annotations).is_file()

    def read(self, split: str) -> CaptionData:
        subset = {"train": "training", "val": "validation"}.get(split)
        if subset is None:
            raise DecembertError(f"split '{split}': youcook2-caption has train and val")
        videos = read_youcook2(dataset_file(self.config, self.config.annotations))
        segments = [s for v in videos.values() if v.subset == subset for s in v.segments]
        return CaptionData(
            [Clip(s.video_id, (s.start, s.end), s.segment_id) for s in segments], [[s.sentence] for s in segments]
        )

    def check(self) -> DataCheck:
        report = DataCheck()
        path = dataset_file(self.config, self.config.annotations)
        report.files["annotations"] = str(path) if path.is_file() else f"missing: {path}"
        self._check(report, ("train", "val"))
        return report
