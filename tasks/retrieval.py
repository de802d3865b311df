"""Text-to-video retrieval with the cross-encoder; `msrvtt-retrieval` and `youcook2-retrieval` bind it to data.

Training is video-text matching as in pre-training: each caption with its clip, replaced with
probability 1/2 by a caption of another clip (a negative); the head is the pre-training VTM
classifier on the mean-pooled sequence (loaded from the pre-training checkpoint when fine-tuning
from one). Evaluation scores every text with every clip of the gallery, in batches of many pairs
per forward pass (each clip's features, dense captions and each text are prepared once), and
reports R@1/5/10, median and mean rank in both directions (`decembert_cli.metrics.retrieval`, ties
broken pessimistically). With `task.rerank_k = K` a cheap first stage ranks the gallery by the
cosine of separately encoded video and text (mean-pooled) and only the top K clips of each text are
re-scored by the cross-encoder, ranked above the rest.

- msrvtt-retrieval: train on the videos of `task.train_list` (MSRVTT_train.9k.csv or 7k) expanded to
  their captions in MSRVTT_data.json; test on the 1k-A CSV (one caption per video, 1,000 x 1,000).
- youcook2-retrieval: every annotated segment is a clip (features and dense captions cut to it);
  train on the training subset, test on validation; `task.clip_list` (validation_youcook.csv)
  restricts the gallery to the clips listed there, as the HowTo100M / MIL-NCE protocol does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from decembert_cli.config import Count, NonNegativeInt, TaskSettings
from decembert_cli.data.annotations.msrvtt import read_1ka, read_msrvtt_data, read_video_list
from decembert_cli.data.annotations.youcook2 import read_clip_list, read_youcook2
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate_with
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore
from decembert_cli.errors import DecembertError
from decembert_cli.metrics.retrieval import retrieval_metrics
from decembert_cli.model.encoder import EncoderOutput
from decembert_cli.model.heads import VTMHead
from decembert_cli.protocols import DataCheck, HeadOutput, TaskDataset, TaskHead, TaskMetric

from .common import ClipTask

CLIP_LIST = "validation_youcook.csv"  # the MIL-NCE / HowTo100M YouCook2 evaluation clips (3,350)
RERANKED = 1e6  # added to cross-encoder scores of re-ranked pairs (first-stage cosines lie in [-1, 1])


@dataclass(frozen=True)
class Clip:
    video_id: str
    window: tuple[float, float] | None  # seconds; None = the whole video
    segment: int | None = None  # the annotation's own segment id (YouCook2 "id"), when it has one


@dataclass
class Pairs:
    """Texts, the clips they describe (`clip_of_text`), and the gallery of clips."""

    clips: list[Clip]
    texts: list[str]
    clip_of_text: list[int]


class RetrievalTrainData(torch.utils.data.Dataset):
    """Item (epoch, i): text i with its clip (match 1), or with probability 1/2 with another clip's text (match 0)."""

    def __init__(self, pairs: Pairs, store: VideoStore, tokenizer: Any, settings: Any, max_video_tokens: int) -> None:
        self.pairs, self.store, self.tokenizer, self.settings, self.max_video_tokens = (
            pairs,
            store,
            tokenizer,
            settings,
            max_video_tokens,
        )
        if len(set(pairs.clip_of_text)) < 2:
            raise DecembertError(
                "retrieval training needs captions of at least two clips (negatives come from other clips)"
            )

    def __len__(self) -> int:
        return len(self.pairs.texts)

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        epoch, index = key
        rng = np.random.default_rng([int(epoch), int(index)])
        clip = self.pairs.clips[self.pairs.clip_of_text[int(index)]]
        text, match = int(index), 1
        if rng.random() < 0.5:
            match = 0
            while self.pairs.clip_of_text[text] == self.pairs.clip_of_text[int(index)]:
                text = int(rng.integers(len(self.pairs.texts)))
        video_2d, video_3d = self.store.features(clip.video_id, clip.window)
        dense = self.store.dense_tokens(self.tokenizer, clip.video_id, clip.window, rng)
        (text_ids,) = tokenize_captions(self.tokenizer, [self.pairs.texts[text]], self.settings.max_text_tokens)
        return _sample(video_2d, video_3d, dense, text_ids, {"match": match})

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


class RetrievalEvalData(torch.utils.data.Dataset):
    """Item t * C + c: text t with clip c, for every text and every clip of the gallery."""

    def __init__(self, pairs: Pairs, store: VideoStore, tokenizer: Any, settings: Any, max_video_tokens: int) -> None:
        self.pairs, self.tokenizer, self.max_video_tokens = pairs, tokenizer, max_video_tokens
        self.videos = [store.features(c.video_id, c.window) for c in pairs.clips]  # prepared once per clip
        self.dense = [store.dense_tokens(tokenizer, c.video_id, c.window, None) for c in pairs.clips]
        self.text_ids = tokenize_captions(tokenizer, pairs.texts, settings.max_text_tokens)

    def __len__(self) -> int:
        return len(self.pairs.texts) * len(self.pairs.clips)

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample:
        _, index = key
        t, c = divmod(int(index), len(self.pairs.clips))
        v2, v3 = self.videos[c]
        return _sample(
            v2,
            v3,
            self.dense[c],
            self.text_ids[t],
            {"text": t, "clip": c, "match": int(self.pairs.clip_of_text[t] == c)},
        )

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate_with(self.tokenizer, samples, self.max_video_tokens)


def _sample(
    v2: np.ndarray, v3: np.ndarray, dense: list[list[int]], text: list[int], extras: dict[str, Any]
) -> EncoderSample:
    segments = [TextSegment(ids, TokenType.DENSE) for ids in dense] + [TextSegment(text, TokenType.ASR)]
    return EncoderSample(torch.from_numpy(v2), torch.from_numpy(v3), segments, extras=extras)


class RetrievalHead(TaskHead):
    """The pre-training VTM classifier: one matching logit per (video, text) pair."""

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.vtm = VTMHead(hidden_size, dropout)

    def from_pretraining(self, state: dict[str, torch.Tensor]) -> bool:
        """Start from the pre-trained VTM head (keys vtm.*), when the checkpoint has one."""
        mine = {k[len("vtm.") :]: v for k, v in state.items() if k.startswith("vtm.")}
        if not mine:
            return False
        self.vtm.load_state_dict(mine)
        return True

    def forward(self, output: EncoderOutput, batch: VideoTextBatch) -> HeadOutput:
        logits = self.vtm(output.pooled)  # (B,)
        match = batch.extras.get("match")
        loss = None if match is None else nn.functional.binary_cross_entropy_with_logits(logits.float(), match.float())
        return HeadOutput({"score": logits}, loss)


class RetrievalMetric(TaskMetric):
    """Collects the score of every (text, clip) pair, then ranks (both directions)."""

    def __init__(self, pairs: Pairs, protocol: dict[str, Any]) -> None:
        self.pairs, self._protocol = pairs, protocol
        self.reset()

    def reset(self) -> None:
        self.scores = np.full((len(self.pairs.texts), len(self.pairs.clips)), np.nan)

    def update(self, outputs: HeadOutput, batch: VideoTextBatch) -> None:
        t = batch.extras["text"].cpu().numpy()
        c = batch.extras["clip"].cpu().numpy()
        self.scores[t, c] = outputs.values["score"].float().cpu().numpy()

    def compute(self) -> dict[str, float]:
        missing = int(np.isnan(self.scores).sum())
        if missing:
            raise DecembertError(f"{missing} of {self.scores.size} text-clip pairs were not scored")
        return retrieval_metrics(self.scores, np.asarray(self.pairs.clip_of_text))

    def protocol(self) -> dict[str, Any]:
        return {**self._protocol, "texts": len(self.pairs.texts), "gallery": len(self.pairs.clips)}

    def predictions(self) -> list[dict[str, Any]]:
        rows = []
        order = np.argsort(-self.scores, axis=1, kind="stable")
        for t, text in enumerate(self.pairs.texts):
            c = self.pairs.clip_of_text[t]
            rank = int((self.scores[t] >= self.scores[t, c]).sum())  # ties pessimistic, as in the metrics
            rows.append(
                {
                    "text": text,
                    "video_id": self.pairs.clips[c].video_id,
                    "window": self.pairs.clips[c].window,
                    "rank": rank,
                    "top5": [self.pairs.clips[j].video_id for j in order[t, :5]],
                }
            )
        return rows


@dataclass(frozen=True)
class RetrievalSettings(TaskSettings):
    max_text_tokens: Count = 30  # WordPiece tokens kept per query text
    # 0: the cross-encoder scores every pair; K > 0: it re-scores only each text's top K of a cosine first stage
    rerank_k: NonNegativeInt = 0


class RetrievalTask(ClipTask):
    """What both retrieval tasks share; subclasses read their files into `Pairs` (`read`)."""

    main_metric = "t2v_R@1"

    def dataset(self, split: str, tokenizer: Any, model: Any, *, train: bool) -> torch.utils.data.Dataset:
        store = VideoStore(self.config, (model.feature_dim_2d, model.feature_dim_3d))
        pairs = self.cached(split)
        lacking = sorted({c.video_id for c in pairs.clips if not store.has_features(c.video_id)})
        if train:
            used = store.training_videos([c.video_id for c in pairs.clips], split)
            keep = [i for i, c in enumerate(pairs.clips) if c.video_id in used]
            remap = {old: new for new, old in enumerate(keep)}
            pairs = Pairs(
                [pairs.clips[i] for i in keep],
                [t for t, c in zip(pairs.texts, pairs.clip_of_text) if c in remap],
                [remap[c] for c in pairs.clip_of_text if c in remap],
            )
        elif lacking:
            raise DecembertError(
                f"{len(lacking)} {split} videos lack features in {store.dir_2d} (first: {lacking[0]}); "
                "every gallery clip must be scored, so extract them first (decembert extract-features)"
            )
        cls = RetrievalTrainData if train else RetrievalEvalData
        return cls(pairs, store, tokenizer, self.config, model.max_video_tokens)

    def head(self, encoder: Any) -> RetrievalHead:
        return RetrievalHead(encoder.hidden_size)

    def protocol(self, split: str) -> dict[str, Any]:
        """What is scored how (recorded in metrics.json)."""
        scoring = (
            "cross-encoder, every pair"
            if self.config.rerank_k <= 0
            else f"cosine first stage, cross-encoder on the top {self.config.rerank_k}"
        )
        return {"split": split, "scoring": scoring}

    def metric(self, split: str) -> RetrievalMetric:
        return RetrievalMetric(self.cached(split), self.protocol(split))

    def _check_pairs(self, report: DataCheck, split: str, store: VideoStore) -> None:
        pairs = self.cached(split)
        videos = sorted({c.video_id for c in pairs.clips})
        lacking = [v for v in videos if not store.has_features(v)]
        counts = {
            "texts": len(pairs.texts),
            "clips": len(pairs.clips),
            "videos": len(videos),
            "videos without features": len(lacking),
        }
        if store.dense_dir is not None:
            counts["videos without dense captions"] = sum(store.dense_file(v) is None for v in videos)
        report.counts[split] = counts
        if lacking:
            report.problems.append(
                f"{split}: {len(lacking)} of {len(videos)} videos lack features in {store.dir_2d} (first: {lacking[0]})"
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
        """Fill the metric: every pair through the cross-encoder, or only each text's top K (rerank_k)."""
        assert isinstance(data, RetrievalEvalData) and isinstance(metric, RetrievalMetric), "this task's own data"
        k = self.config.rerank_k
        pairs = data.pairs
        n_texts, n_clips = len(pairs.texts), len(pairs.clips)
        offset = 0.0
        if k <= 0 or k >= n_clips:
            wanted = [(t, c) for t in range(n_texts) for c in range(n_clips)]
        else:
            cheap = _cosine_scores(model, data, batch_size, device)  # (T, C) cosines in [-1, 1]
            metric.scores[:] = cheap
            offset = RERANKED  # re-scored pairs rank above every pair of the first stage
            top = np.argsort(-cheap, axis=1, kind="stable")[:, :k]
            wanted = [(t, int(c)) for t in range(n_texts) for c in top[t]]
        for first in range(0, len(wanted), batch_size):
            chunk = wanted[first : first + batch_size]
            batch = data.collate([data[(0, t * n_clips + c)] for t, c in chunk]).to(device)
            # float64: + RERANKED keeps every digit
            scores = model.head(model.encode(batch), batch).values["score"].double().cpu().numpy()
            metric.scores[[t for t, _ in chunk], [c for _, c in chunk]] = scores + offset
            if progress is not None:
                progress(min(len(wanted), first + batch_size), len(wanted))


def _cosine_scores(model: Any, data: RetrievalEvalData, batch_size: int, device: torch.device) -> np.ndarray:
    """Cosine of the mean-pooled encodings of each clip alone (video + dense captions) and each text alone."""
    empty = torch.zeros(1, data.videos[0][0].shape[1]), torch.zeros(1, data.videos[0][1].shape[1])

    def encode(samples: list[EncoderSample]) -> torch.Tensor:
        batch = collate_with(data.tokenizer, samples, data.max_video_tokens)
        return nn.functional.normalize(model.encoder(batch.to(device)).pooled.float(), dim=-1).cpu()

    clips = [
        EncoderSample(torch.from_numpy(v2), torch.from_numpy(v3), [TextSegment(ids, TokenType.DENSE) for ids in d])
        for (v2, v3), d in zip(data.videos, data.dense)
    ]
    texts = [EncoderSample(empty[0], empty[1], [TextSegment(ids, TokenType.ASR)]) for ids in data.text_ids]
    video_vecs = torch.cat([encode(clips[i : i + batch_size]) for i in range(0, len(clips), batch_size)])
    text_vecs = torch.cat([encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    return (text_vecs @ video_vecs.T).numpy()


# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MSRVTTRetrievalConfig(RetrievalSettings):
    data: str = "MSRVTT_data.json"  # videos, splits and their 20 captions each
    # training videos: 7k = those MSRVTT_data.json marks train or validate (7,010; the paper)
    # | 9k = MSRVTT_train.9k.csv | a CSV path
    train_list: str = "7k"
    test: str = "MSRVTT_JSFUSION_test.csv"  # the 1k-A test: key,vid_key,video_id,sentence


class MSRVTTRetrieval(RetrievalTask):
    """MSR-VTT text-to-video retrieval, 1k-A test (Yu et al., 2018)."""

    name = "msrvtt-retrieval"
    Config = MSRVTTRetrievalConfig
    eval_split = "test"

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        return {"root": str(Path(sample_root) / "msrvtt")}

    def protocol(self, split: str) -> dict[str, Any]:
        return {**super().protocol(split), "train_list": self.config.train_list}

    def _train_list_file(self) -> str | None:
        """The CSV of training videos, or None for the 7k list (read from MSRVTT_data.json)."""
        return {"7k": None, "9k": "MSRVTT_train.9k.csv"}.get(self.config.train_list, self.config.train_list)

    def has_split(self, split: str) -> bool:
        files = {
            "train": (self.config.data, self._train_list_file() or self.config.data),
            "test": (self.config.test,),
        }.get(split, ())
        return bool(files) and all(self._path(f).is_file() for f in files)

    def read(self, split: str) -> Pairs:
        if split == "train":
            videos, sentences = read_msrvtt_data(self._path(self.config.data))
            listed = self._train_list_file()
            if listed is None:  # the 7k list: every train and validate video of MSRVTT_data.json
                ids = [v.video_id for v in videos.values() if v.split in ("train", "validate")]
            else:
                ids = read_video_list(self._path(listed))
            missing = [v for v in ids if v not in sentences]
            if missing:
                source = self._path(listed) if listed else self._path(self.config.data)
                raise DecembertError(
                    f"{source}: {len(missing)} training videos have no sentences in {self.config.data} "
                    f"(first: {missing[0]})"
                )
            clips = [Clip(v, None) for v in ids]
            texts = [(i, s) for i, v in enumerate(ids) for s in sentences[v]]
            return Pairs(clips, [s for _, s in texts], [i for i, _ in texts])
        if split == "test":
            test = read_1ka(self._path(self.config.test))
            order = list(dict.fromkeys(v for v, _ in test))
            index = {v: i for i, v in enumerate(order)}
            return Pairs([Clip(v, None) for v in order], [s for _, s in test], [index[v] for v, _ in test])
        raise DecembertError(f"split '{split}': msrvtt-retrieval has train and test")

    def check(self) -> DataCheck:
        report = DataCheck()
        store = VideoStore(self.config)
        train_list = self._train_list_file() or self.config.data
        for role, name in (
            ("videos and captions", self.config.data),
            ("train list", train_list),
            ("test", self.config.test),
        ):
            path = self._path(name)
            report.files[role] = str(path) if path.is_file() else f"missing: {path}"
        for split in ("train", "test"):
            if self.has_split(split):
                self._check_pairs(report, split, store)
        return report


@dataclass(frozen=True)
class YouCook2RetrievalConfig(RetrievalSettings):
    annotations: str = "youcookii_annotations_trainval.json"  # YouCook2 train + validation annotations
    # the gallery: auto = validation_youcook.csv (the MIL-NCE clip list, 3,350 clips) when task.root has it,
    # else every validation segment | "" = every segment | a CSV path
    clip_list: str = "auto"


class YouCook2Retrieval(RetrievalTask):
    """YouCook2 text-to-clip retrieval on the validation segments (Zhou et al., 2018)."""

    name = "youcook2-retrieval"
    Config = YouCook2RetrievalConfig
    eval_split = "val"

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any]:
        return {"root": str(sample_root), "annotations": "youcook2/youcookii_annotations_trainval.json"}

    def has_split(self, split: str) -> bool:
        return split in ("train", "val") and self._path(self.config.annotations).is_file()

    def clip_list(self) -> Path | None:
        """The clip-list file that makes the validation gallery, or None (every validation segment)."""
        if self.config.clip_list == "auto":
            found = self._path(CLIP_LIST)
            return found if found.is_file() else None
        return self._path(self.config.clip_list) if self.config.clip_list else None

    def protocol(self, split: str) -> dict[str, Any]:
        listed = self.clip_list() if split == "val" else None
        return {
            **super().protocol(split),
            "gallery_source": f"{listed} (clip list)" if listed else f"every {split} segment",
        }

    def read(self, split: str) -> Pairs:
        subset = {"train": "training", "val": "validation"}.get(split)
        if subset is None:
            raise DecembertError(f"split '{split}': youcook2-retrieval has train and val")
        videos = read_youcook2(self._path(self.config.annotations))
        segments = [s for v in videos.values() if v.subset == subset for s in v.segments]
        clip_list = self.clip_list() if split == "val" else None
        if clip_list is not None:
            listed = read_clip_list(clip_list)
            clips = [Clip(v, (start, end)) for v, start, end, _text in listed]
            return Pairs(clips, [text for *_x, text in listed], list(range(len(listed))))
        return Pairs(
            [Clip(s.video_id, (s.start, s.end)) for s in segments],
            [s.sentence for s in segments],
            list(range(len(segments))),
        )

    def check(self) -> DataCheck:
        report = DataCheck()
        path = self._path(self.config.annotations)
        report.files["annotations"] = str(path) if path.is_file() else f"missing: {path}"
        clip_path = self.clip_list()
        if clip_path is not None or self.config.clip_list not in ("", "auto"):
            clip_path = clip_path or self._path(self.config.clip_list)
            report.files["clip list"] = str(clip_path) if clip_path.is_file() else f"missing: {clip_path}"
        else:
            report.files["clip list"] = f"none: the gallery is every validation segment (no {CLIP_LIST} in task.root)"
        if path.is_file():
            videos = read_youcook2(path)
            for subset in ("training", "validation"):
                chosen = [v for v in videos.values() if v.subset == subset]
                report.details[f"{subset} videos / segments"] = (
                    f"{len(chosen):,} / {sum(len(v.segments) for v in chosen):,}"
                )
            store = VideoStore(self.config)
            for split in ("train", "val"):
                self._check_pairs(report, split, store)
        return report
