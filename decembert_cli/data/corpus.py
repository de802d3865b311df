"""Pre-training corpora: videos with ASR captions, features and dense captions -> DeCEMBERT samples.

A corpus plugin (entry-point group `decembert.corpora`) is either an `IndexedCorpus` (HowTo100M's
layout: `howto100m`, `sample`), read through its persistent index (`data.corpus_index`), or a
`decembert_cli.protocols.CorpusOpener`: a function (config, report, dims, progress) ->
list[VideoRecord] whose records are tokenised into a table in memory. Either way `open_corpus`
gives a `ClipTable` (`data.clip_table`), and everything after it is shared: the held-out split
(`split_videos`) and sample construction (`PretrainDataset`), which draws only from the table's
columns (captions are already WordPiece ids) and reads each clip's feature rows lazily.

Sample construction follows the paper (DESIGN.md §1). For clip i of a video (the span of its ASR
caption s_i):
- video: the seconds floor(start_i) .. ceil(end_i) of the 1 s feature grid (at least one; the
  collate step down-samples beyond `model.max_video_tokens`);
- dense captions: from the frames captioned every `dense_interval` s inside that window, at most
  `dense_per_frame` sampled per frame at each step (repeats on contiguous frames already dropped);
- ASR captions: s_{i-k} .. s_{i+k} (those that exist), the candidates of the constrained loss;
- with probability `negative_prob` the ASR captions are replaced by those around another clip
  (`negatives: video`: the video features are replaced by that clip's instead, so that the text alone
  cannot tell a negative; `both`: half of each): `same_video_negatives` of the time a clip of the
  same video more than k captions away, else a
  clip of another video (VTM label 0);
- MLM: about `mask_prob` of the ASR and dense-caption tokens are masked, token by token (the paper),
  by whole words or by concepts (`mask_unit`, data/masking.py); the masked ASR tokens of a negative
  are scored only with `mlm_on_negatives`. Each segment keeps its ids before masking (`original`), for
  VTM on the unmasked text (`loss.vtm_input`).

Randomness comes from a generator seeded by (seed, epoch, index), so a sample does not depend on
the worker, the process or the order that loads it: resumed and distributed runs see the same data.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decembert_cli.config.schema import DataConfig
from decembert_cli.data.batch import (
    IGNORE_INDEX,
    EncoderSample,
    TextSegment,
    TokenType,
    VideoTextBatch,
    collate,
    uniform_indices,
)
from decembert_cli.data.clip_table import ClipTable
from decembert_cli.data.corpus_index import IndexedCorpus, open_index
from decembert_cli.data.howto100m import BadVideo
from decembert_cli.data.masking import WordPieces, mask_segments
from decembert_cli.data.scan import DataReport
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.errors import DecembertError
from decembert_cli.io import append_jsonl
from decembert_cli.registry import corpora

MAX_TEXT_POSITIONS = 512  # BERT's position table: text tokens (with [SEP]s) per sample
VAL_EPOCH = 2**31 - 1  # the "epoch" that seeds validation samples (fixed for the whole run)


def open_corpus(
    name: str,
    config: DataConfig,
    dims: tuple[int, int],
    tokenizer: Any,
    *,
    strict: bool,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
) -> tuple[ClipTable, DataReport]:
    """The usable videos and clips of corpus `name` (a `decembert.corpora` plugin) and what it skipped.

    A corpus in HowTo100M's layout (an `IndexedCorpus`: howto100m, sample) is read through its
    persistent index, built here (with `workers` processes) when it has none; any other plugin's
    records are tokenised into a table in memory."""
    opener = corpora.load(name)
    if not isinstance(opener, IndexedCorpus):
        report = DataReport(strict=strict)
        return ClipTable.from_records(opener(config, report, dims, progress), tokenizer), report
    table, found, _folder = open_index(opener, config, dims, tokenizer, name=name, workers=workers, progress=progress)
    report = DataReport(
        strict=strict,
        videos_seen=found["videos_seen"],
        videos_used=found["videos_used"],
        skipped=Counter(found["skipped"]),
        fixed=Counter(found["fixed"]),
        examples=found["examples"],
    )
    if strict and (report.skipped or report.fixed):
        first = min(report.examples.values())
        raise DecembertError(
            f"video {first} (--strict stops at the first problem; without it, such videos are skipped or "
            f"fixed and counted: {dict(report.skipped + report.fixed)})"
        )
    return table, report


@dataclass(frozen=True)
class SampleInfo:
    video: int  # the dataset's video (row of `PretrainDataset.videos`)
    clip: int  # caption index of the clip within its video
    # None (positive), "same-video" or "other-video" (ASR replaced), "same-video video" or "other-video video"
    negative: str | None
    source: tuple[int, int]  # (dataset video, caption) around which the ASR captions were taken


DENSE_TOKENS_ESTIMATE = 8  # WordPiece tokens of a dense region caption, for length estimates ("a red mug on a table")


class PretrainDataset(torch.utils.data.Dataset):
    """Clips of some videos of a `ClipTable` as DeCEMBERT samples; item key = (epoch, index) or index."""

    def __init__(
        self,
        table: ClipTable,
        tokenizer: Any,
        config: DataConfig,
        *,
        videos: np.ndarray | None = None,
        seed: int,
        max_video_tokens: int = 100,
        epoch_unit: str = "clip",
        shuffle_candidates: bool = True,
        mlm_on_negatives: bool = True,
        strict: bool = False,
        skip_log: Path | None = None,
    ) -> None:
        """videos: the table rows to draw from (default: all), e.g. one side of `split_videos`.
        epoch_unit: "clip" (an item per clip) or "video" (an item per video: one clip of it, drawn
        per epoch, as the released code counts epochs). shuffle_candidates: False keeps the
        candidates in time order (attention pictures). mlm_on_negatives: False leaves the masked ASR
        tokens of VTM negatives without labels (loss.mlm_on_negatives). A video found bad while drawing a sample
        (NaN features, an unreadable dense-caption file) stops the run when `strict`; otherwise its
        samples are drawn from the next good video, and it is noted once per process on stderr and
        in `skip_log` (JSON lines, merged into the run's data report)."""
        k = config.neighbours
        if k < 0:
            raise DecembertError(f"data.neighbours must be 0 or more, got {k}")
        asr_positions = 1 + (2 * k + 1) * (config.max_caption_tokens + 1)  # [CLS], captions and their [SEP]s
        if asr_positions > MAX_TEXT_POSITIONS:
            raise DecembertError(
                f"data.neighbours={k} with data.max_caption_tokens={config.max_caption_tokens} needs {asr_positions} "
                f"text positions, more than {MAX_TEXT_POSITIONS}; lower one of them"
            )
        for key in ("mask_prob", "negative_prob", "same_video_negatives"):
            if not 0.0 <= getattr(config, key) <= 1.0:
                raise DecembertError(f"data.{key} must lie in [0, 1], got {getattr(config, key)}")
        self.table = table
        self.tokenizer = tokenizer
        self.config = config
        self.seed = seed
        self.max_video_tokens = max_video_tokens
        self.videos = np.arange(len(table), dtype=np.int64) if videos is None else np.asarray(videos, dtype=np.int64)
        offsets = np.asarray(table.clip_offsets)
        counts = offsets[self.videos + 1] - offsets[self.videos]
        self.clip_offsets = np.zeros(len(self.videos) + 1, dtype=np.int64)  # dataset video v: its clips' items
        np.cumsum(counts, out=self.clip_offsets[1:])
        if epoch_unit not in ("clip", "video"):
            raise DecembertError(f"train.epoch_unit = {epoch_unit!r}: use clip or video")
        self.epoch_unit = epoch_unit
        self.shuffle_candidates = shuffle_candidates
        self.mlm_on_negatives = mlm_on_negatives
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.pieces = WordPieces.of(tokenizer)  # word boundaries, concepts, [MASK] and the vocabulary size
        self.strict = strict
        self.skip_log = skip_log
        self.bad_videos: set[int] = set()  # found bad by this process
        self._dense_ids: dict[str, list[int]] = {}  # dense caption -> its ids (they repeat across frames)

    @property
    def mask_id(self) -> int:
        return self.pieces.mask_id

    @property
    def n_clips(self) -> int:
        return int(self.clip_offsets[-1])

    def __len__(self) -> int:
        return len(self.videos) if self.epoch_unit == "video" else self.n_clips

    def item_lengths(self, dense_tokens: int = DENSE_TOKENS_ESTIMATE) -> np.ndarray:
        """(len(self),) uint16 estimated sequence length of every item, for length-aware batching: the
        clip's video tokens (its seconds, at most max_video_tokens), [CLS] and the ASR candidates
        s_i-k .. s_i+k with their [SEP]s, and its dense captions (dense_per_frame per captioned frame,
        at most max_dense_captions, `dense_tokens` + [SEP] each: an estimate, not the captions picked).
        A video-unit item (one clip drawn per epoch) gets its clips' mean. Computed by blocks of videos."""
        cfg, table, k = self.config, self.table, self.config.neighbours
        out = np.empty(len(self), dtype=np.uint16)
        dense = cfg.use_dense and table.has_dense() > 0
        block = 50_000
        for first in range(0, len(self.videos), block):
            rows = self.videos[first : first + block]
            lo, hi = np.asarray(table.clip_offsets)[rows], np.asarray(table.clip_offsets)[rows + 1]
            counts = hi - lo
            clip = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(int(counts.sum()))
            start, end = np.asarray(table.start)[clip], np.asarray(table.end)[clip]
            seconds = np.repeat(np.asarray(table.seconds)[rows], counts)
            window = np.clip(np.ceil(end) - np.floor(start), 1, np.maximum(seconds, 1))
            offsets = np.asarray(table.token_offsets)
            caption = np.minimum(offsets[clip + 1] - offsets[clip], cfg.max_caption_tokens) + 1  # + [SEP]
            csum = np.r_[0, np.cumsum(caption)]
            local = np.arange(len(clip))  # position in this block
            video_first = np.repeat(np.cumsum(np.r_[0, counts[:-1]]), counts)
            video_last = video_first + np.repeat(counts, counts) - 1
            a, b = np.maximum(local - k, video_first), np.minimum(local + k, video_last)
            length = np.minimum(window, self.max_video_tokens) + 1 + csum[b + 1] - csum[a]
            if dense:
                frames = np.ceil(window / cfg.dense_interval) * cfg.dense_per_frame
                length += np.minimum(frames, cfg.max_dense_captions) * (dense_tokens + 1)
            length = np.minimum(length, np.iinfo(np.uint16).max)
            if self.epoch_unit == "video":
                means = np.add.reduceat(length, np.cumsum(np.r_[0, counts[:-1]])) / np.maximum(counts, 1)
                out[first : first + len(rows)] = np.round(means)
            else:
                base = int(self.clip_offsets[first])
                out[base : base + len(clip)] = length
        return out

    def __getitem__(self, key: int | tuple[int, int]) -> EncoderSample:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        return self.build(int(epoch), self.clip_index(int(epoch), int(index)))[0]

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset video, caption index) of clip `index`."""
        v = int(np.searchsorted(self.clip_offsets, index, side="right")) - 1
        return v, index - int(self.clip_offsets[v])

    def video_id(self, v: int) -> str:
        return self.table.video_ids[int(self.videos[v])]

    def clip_count(self, v: int) -> int:
        return int(self.clip_offsets[v + 1] - self.clip_offsets[v])

    def clip_index(self, epoch: int, item: int) -> int:
        """The clip that item `item` of `epoch` stands for: itself when the epoch unit is the clip;
        one of the video's clips, drawn anew each epoch, when it is the video."""
        if self.epoch_unit == "clip":
            return item
        n_clips = self.clip_count(item)
        return int(self.clip_offsets[item]) + int(np.random.default_rng([self.seed, epoch, item, 1]).integers(n_clips))

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate(
            samples, cls_id=self.cls_id, sep_id=self.sep_id, pad_id=self.pad_id, max_video_tokens=self.max_video_tokens
        )

    def _negative_source(self, rng: np.random.Generator, v: int, i: int) -> tuple[str, int, int]:
        cfg = self.config
        n_clips = self.clip_count(v)
        same = rng.random() < cfg.same_video_negatives
        if (same and n_clips > 1) or len(self.videos) == 1:
            far = [j for j in range(n_clips) if abs(j - i) > cfg.neighbours]
            pool = far or [j for j in range(n_clips) if j != i]
            return "same-video", v, int(pool[rng.integers(len(pool))])
        other = int(rng.integers(len(self.videos) - 1))
        other += other >= v  # any video but this one
        return "other-video", other, int(rng.integers(self.clip_count(other)))

    def _found_bad(self, v: int, problem: BadVideo) -> None:
        video_id = self.video_id(v)
        if self.strict:
            raise DecembertError(
                f"video {video_id}: {problem}; "
                "fix or remove its files and run again, or leave out --strict to skip such videos"
            )
        self.bad_videos.add(v)
        print(f"note: video {video_id} skipped for the rest of the run: {problem}", file=sys.stderr)
        if self.skip_log is not None:
            append_jsonl(self.skip_log, {"video_id": video_id, "kind": problem.kind, "reason": str(problem)})
        if len(self.bad_videos) == len(self.videos):
            raise DecembertError(f"every video of this split is bad (the last: {video_id}: {problem})")

    def _dense_tokens(self, texts: list[str]) -> list[list[int]]:
        """`tokenize_captions` of a record's dense captions, each distinct caption tokenised once per process (an
        index holds them tokenised)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._dense_ids]
        if new:
            if len(self._dense_ids) + len(new) > 200_000:  # a bound on memory; captions repeat within videos
                self._dense_ids.clear()
                new = list(dict.fromkeys(texts))
            ids = tokenize_captions(self.tokenizer, new, self.config.dense_caption_tokens)
            self._dense_ids.update(zip(new, ids, strict=True))
        return [list(self._dense_ids[t]) for t in texts]

    def build(self, epoch: int, index: int) -> tuple[EncoderSample, SampleInfo]:
        """The sample for clip `index` at `epoch` (deterministic), with how it was made; a clip of a
        bad video is replaced by the first clip of the next good one."""
        cfg, table = self.config, self.table
        while True:
            v, i = self.locate(index)
            if v not in self.bad_videos:
                rng = np.random.default_rng([self.seed, epoch, index])
                row = int(self.videos[v])
                window = table.window(row, i)
                try:
                    video_2d, video_3d = table.features(row, window)
                    dense_ids = table.dense_tokens(row, window, rng, cfg, self._dense_tokens) if cfg.use_dense else []
                    break
                except BadVideo as problem:
                    self._found_bad(v, problem)
            index = int(self.clip_offsets[(v + 1) % len(self.videos)])

        negative: str | None = None
        source_v, source_i = v, i
        if rng.random() < cfg.negative_prob:
            negative, source_v, source_i = self._negative_source(rng, v, i)
            if cfg.negatives == "video" or (cfg.negatives == "both" and rng.random() < 0.5):
                other = self._other_video(source_v, source_i)
                if other is not None:  # else (a bad video) an ASR negative
                    video_2d, video_3d = other
                    negative, source_v, source_i = f"{negative} video", v, i  # the text stays the clip's own
        source_row = int(self.videos[source_v])
        lo, hi = max(0, source_i - cfg.neighbours), min(self.clip_count(source_v) - 1, source_i + cfg.neighbours)
        # candidate slot -> caption index: shuffled, so that no slot stands for a time offset
        order = lo + (rng.permutation(hi - lo + 1) if self.shuffle_candidates else np.arange(hi - lo + 1))
        asr_ids = [table.caption_ids(source_row, int(j), cfg.max_caption_tokens) for j in order]
        budget = MAX_TEXT_POSITIONS - 1 - sum(len(x) + 1 for x in asr_ids)  # 1: [CLS]
        while dense_ids and sum(len(x) + 1 for x in dense_ids) > budget:
            dense_ids.pop()

        masked = mask_segments(
            [*dense_ids, *asr_ids], cfg.mask_prob, rng, unit=cfg.mask_unit, pieces=self.pieces, replace=cfg.mask_replace
        )
        segments = [
            TextSegment(inputs, TokenType.DENSE, labels=labels, original=ids)
            for (inputs, labels), ids in zip(masked[: len(dense_ids)], dense_ids, strict=True)
        ]
        for c, ((inputs, labels), ids) in enumerate(zip(masked[len(dense_ids) :], asr_ids, strict=True)):
            if negative is not None and not self.mlm_on_negatives:
                labels = [IGNORE_INDEX] * len(labels)  # masked all the same: masks must not tell a negative apart
            segments.append(TextSegment(inputs, TokenType.ASR, candidate=c, labels=labels, original=ids))

        own, aligned = -1, -1
        if negative is None:
            own = int(np.flatnonzero(order == i)[0])
            truth = table.aligned[int(table.clip_offsets[row]) + order]
            matches = np.flatnonzero(truth == i)
            aligned = int(matches[0]) if len(matches) == 1 else -1
        sample = EncoderSample(
            video_2d=torch.from_numpy(video_2d),
            video_3d=torch.from_numpy(video_3d),
            segments=segments,
            vtm_label=int(negative is None),
            own_candidate=own,
            aligned=aligned,
            candidate_offsets=[int(j) - source_i for j in order],
        )
        return sample, SampleInfo(v, i, negative, (source_v, source_i))

    def _other_video(self, other_v: int, other_i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The features of clip `other_i` of dataset video `other_v` (a video negative); None, with the
        video noted as bad, when they cannot be read."""
        if other_v in self.bad_videos:
            return None
        row = int(self.videos[other_v])
        try:
            return self.table.features(row, self.table.window(row, other_i))
        except BadVideo as problem:
            self._found_bad(other_v, problem)
            return None


def validation_indices(n: int, limit: int, clip_offsets: np.ndarray | None = None) -> list[int]:
    """At most `limit` clip indices spread evenly over 0..n-1 (all when n <= limit).

    With the dataset's `clip_offsets` (video v's clips are clip_offsets[v]..clip_offsets[v + 1] - 1) they come
    interleaved across videos instead of in clip order: each video's clips spread evenly over the list, so that
    neighbouring items are clips of different videos. Validation's video-use check gives each sample the video
    of the item before it in its batch; in clip order that was mostly the neighbouring clip of the same video,
    which shows the same objects."""
    chosen = np.arange(n) if n <= limit else uniform_indices(n, limit).numpy()
    if clip_offsets is None or len(chosen) == 0:
        return chosen.tolist()
    video = np.searchsorted(clip_offsets, chosen, side="right") - 1
    starts = np.r_[0, np.flatnonzero(np.diff(video)) + 1]  # chosen is sorted, so each video's clips are a run
    counts = np.diff(np.r_[starts, len(chosen)])
    rank = np.arange(len(chosen)) - np.repeat(starts, counts)
    place = (rank + 0.5) / np.repeat(counts, counts)  # where in the list each clip goes, 0..1
    return chosen[np.lexsort((video, place))].tolist()
