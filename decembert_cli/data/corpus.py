"""Pre-training corpora: videos with ASR captions, features and dense captions -> DeCEMBERT samples.

A corpus plugin (entry-point group `decembert.corpora`) is a `decembert_cli.protocols.CorpusOpener`:
a function (config, report, dims, progress) -> list[VideoRecord] that returns the usable videos and
reports the ones it skipped. Everything after that is shared:
the held-out split (`split_videos`) and sample construction (`PretrainDataset`).

Sample construction follows the paper (DESIGN.md §1). For clip i of a video (the span of its ASR
caption s_i):
- video: the seconds floor(start_i) .. ceil(end_i) of the 1 s feature grid (at least one; the
  collate step down-samples beyond `model.max_video_tokens`);
- dense captions: from the frames captioned every `dense_interval` s inside that window, at most
  `dense_per_frame` sampled per frame at each step (repeats on contiguous frames already dropped);
- ASR captions: s_{i-k} .. s_{i+k} (those that exist), the candidates of the constrained loss;
- with probability `negative_prob` the ASR captions are replaced by those around another clip:
  `same_video_negatives` of the time a clip of the same video more than k captions away, else a
  clip of another video (VTM label 0);
- MLM: each ASR and dense-caption token is selected with probability `mask_prob`.

Randomness comes from a generator seeded by (seed, epoch, index), so a sample does not depend on
the worker, the process or the order that loads it: resumed and distributed runs see the same data.
"""

from __future__ import annotations

import csv
import hashlib
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decembert_cli.config.schema import DataConfig
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate, uniform_indices
from decembert_cli.data.howto100m import BadVideo, VideoCaptions, clean_captions, open_captions
from decembert_cli.data.masking import mask_tokens
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, resolve
from decembert_cli.errors import DecembertError
from decembert_cli.io import append_jsonl

MAX_TEXT_POSITIONS = 512  # BERT's position table: text tokens (with [SEP]s) per sample
VAL_EPOCH = 2**31 - 1  # the "epoch" that seeds validation samples (fixed for the whole run)
CAPTION_FILES = ("caption.json", "raw_caption.json", "howto100m_captions.zip", "howto100m_captions")


@dataclass
class VideoRecord:
    """One usable video. Corpus plugins may subclass it to read features or dense captions differently."""

    video_id: str
    captions: VideoCaptions  # cleaned: sorted, non-empty, within the features
    seconds: int  # length of the 1 s feature grid
    store: VideoStore  # where its features and dense captions are
    aligned_to: list[int] | None = None  # per caption: index of the clip it truly describes (-1: none); sample corpus

    def features(self, window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, dim) float32 arrays of both streams for window = (first second, end second). Raises BadVideo."""
        return self.store.read_features(self.video_id, window)

    def dense_captions(self, window: tuple[int, int], rng: np.random.Generator | None) -> list[str]:
        """The dense captions of the frames in `window`, picked as the store does. Raises BadVideo."""
        return self.store.read_dense(self.video_id, window, rng)


@dataclass
class DataReport:
    """What a corpus skipped or fixed, counted by kind; with `strict`, the first problem is an error."""

    strict: bool = False
    videos_seen: int = 0
    videos_used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # kind -> videos skipped
    fixed: Counter[str] = field(default_factory=Counter)  # kind -> lines dropped / videos repaired
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first video id and its message

    def skip(self, video_id: str, problem: BadVideo) -> None:
        if self.strict:
            raise DecembertError(
                f"video {video_id}: {problem} "
                "(--strict stops at the first bad video; without it, such videos are skipped and counted)"
            )
        self.skipped[problem.kind] += 1
        self.examples.setdefault(problem.kind, f"{video_id}: {problem}")

    def fix(self, video_id: str, counts: Counter[str]) -> None:
        if counts and self.strict:
            kind = next(iter(counts))
            raise DecembertError(
                f"video {video_id}: {kind} "
                "(--strict stops at the first problem; without it, these are fixed and counted)"
            )
        for kind, n in counts.items():
            self.fixed[kind] += n
            self.examples.setdefault(kind, video_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "videos_seen": self.videos_seen,
            "videos_used": self.videos_used,
            "skipped": dict(self.skipped),
            "fixed": dict(self.fixed),
            "examples": self.examples,
        }


def _captions_path(root: Path, value: str) -> Path:
    if value != "auto":
        path = resolve(root, value)
        if not path.exists():
            raise DecembertError(f"data.captions: {path} not found")
        return path
    for name in CAPTION_FILES:
        if (root / name).exists():
            return root / name
    raise DecembertError(f"no captions in {root}: expected one of {', '.join(CAPTION_FILES)} (or set data.captions)")


def _video_list(root: Path, value: str) -> set[str] | None:
    if not value:
        return None
    path = resolve(root, value)
    if not path.is_file():
        if value != DataConfig.videos_csv:
            raise DecembertError(f'data.videos_csv: {path} not found (set it to "" to use every captioned video)')
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            raise DecembertError(f"{path} line 1: no video_id column (header: {reader.fieldnames})")
        return {row["video_id"] for row in reader if row.get("video_id")}


def open_howto100m(
    config: DataConfig,
    report: DataReport,
    dims: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
) -> list[VideoRecord]:
    """HowTo100M as its users have it (DATA_FORMATS.md): captions, per-video features, dense captions."""
    store = VideoStore(config, dims, section="data")
    captions_path = _captions_path(store.root, config.captions)
    source = open_captions(captions_path)
    raw = captions_path.name.startswith("raw_caption")
    trim = config.trim_overlap == "on" or (config.trim_overlap == "auto" and raw)
    wanted = _video_list(store.root, config.videos_csv)
    store.require_folders()
    if config.min_clips < 1:
        raise DecembertError(f"data.min_clips must be at least 1, got {config.min_clips}")

    ids = [v for v in source.ids() if wanted is None or v in wanted]
    records: list[VideoRecord] = []
    for n, video_id in enumerate(ids):
        if progress is not None:
            progress(n, len(ids))
        report.videos_seen += 1
        try:
            records.append(_usable_video(store, video_id, source.get(video_id), trim, config.min_clips, report))
        except BadVideo as problem:
            report.skip(video_id, problem)
    if progress is not None:
        progress(len(ids), len(ids))
    report.videos_used = len(records)
    if not records:
        raise DecembertError(f"no usable video in {store.root}: {dict(report.skipped) or 'no captioned videos'}")
    return records


def _usable_video(
    store: VideoStore, video_id: str, lines: VideoCaptions, trim: bool, min_clips: int, report: DataReport
) -> VideoRecord:
    """The video's record: its captions cleaned (fixes counted in `report`) and cut to its features.
    Raises BadVideo when it has too few captions, unreadable features or (when used) no dense captions."""
    counts: Counter[str] = Counter()
    captions = clean_captions(lines, trim_rolling=trim, counts=counts)
    report.fix(video_id, counts)
    if len(captions) < min_clips:
        raise BadVideo(f"{len(captions)} usable captions, fewer than data.min_clips={min_clips}", "too few clips")
    seconds = store.seconds(video_id)
    inside = [i for i, s in enumerate(captions.start) if math.floor(s) < seconds]
    if len(inside) < len(captions):
        dropped = Counter({"caption lines after the end of the features (dropped)": len(captions) - len(inside)})
        report.fix(video_id, dropped)
        captions = VideoCaptions(
            video_id,
            [captions.start[i] for i in inside],
            [captions.end[i] for i in inside],
            [captions.text[i] for i in inside],
        )
        if len(captions) < min_clips:
            raise BadVideo(f"{len(captions)} captions fall within the {seconds} s of features", "too few clips")
    if store.dense_dir is not None and store.dense_file(video_id) is None:
        raise BadVideo(f"no dense captions ({video_id}.json or .npy) in {store.dense_dir}", "dense captions missing")
    return VideoRecord(video_id, captions, seconds, store)


def open_corpus(
    name: str,
    config: DataConfig,
    dims: tuple[int, int],
    *,
    strict: bool,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[VideoRecord], DataReport]:
    """The usable videos of corpus `name` (a `decembert.corpora` plugin) and what it skipped."""
    from decembert_cli.registry import corpora

    report = DataReport(strict=strict)
    return corpora.load(name)(config, report, dims, progress), report


def split_videos(records: list[VideoRecord], val_videos: int) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(train, val): `val_videos` held out by video, at most a tenth of the corpus (one when it has 2-19).

    The choice depends only on the video ids (ordered by a hash), so it is the same on every run and
    machine and a video stays on its side when others are added.
    """
    n_val = min(val_videos, len(records) // 10)
    if n_val == 0 and val_videos > 0 and len(records) >= 2:
        n_val = 1
    ranked = sorted(records, key=lambda r: hashlib.sha1(r.video_id.encode("utf-8")).hexdigest())
    val_ids = {r.video_id for r in ranked[:n_val]}
    return [r for r in records if r.video_id not in val_ids], [r for r in records if r.video_id in val_ids]


@dataclass(frozen=True)
class SampleInfo:
    video: int  # record index of the clip
    clip: int  # caption index of the clip
    negative: str | None  # None (positive), "same-video" or "other-video"
    source: tuple[int, int]  # (record, caption) around which the ASR captions were taken


def clip_window(captions: VideoCaptions, i: int, seconds: int) -> tuple[int, int]:
    """Seconds [first, end) of the 1 s grid under caption i: floor(start) .. ceil(end), at least one."""
    first = min(math.floor(captions.start[i]), seconds - 1)
    end = min(max(first + 1, math.ceil(captions.end[i])), seconds)
    return first, end


class PretrainDataset(torch.utils.data.Dataset):
    """Clips of a list of videos as DeCEMBERT samples; item key = (epoch, index) or index."""

    def __init__(
        self,
        records: list[VideoRecord],
        tokenizer: Any,
        config: DataConfig,
        *,
        seed: int,
        max_video_tokens: int = 100,
        epoch_unit: str = "clip",
        shuffle_candidates: bool = True,
        strict: bool = False,
        skip_log: Path | None = None,
    ) -> None:
        """epoch_unit: "clip" (an item per clip) or "video" (an item per video: one clip of it, drawn
        per epoch, as the released code counts epochs). shuffle_candidates: False keeps the
        candidates in time order (attention pictures). A video found bad while drawing a sample
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
        self.records = records
        self.tokenizer = tokenizer
        self.config = config
        self.seed = seed
        self.max_video_tokens = max_video_tokens
        counts = np.array([len(r.captions) for r in records], dtype=np.int64)
        firsts = np.cumsum(counts) - counts  # index of each video's first clip
        video = np.repeat(np.arange(len(records)), counts)
        self.clips = np.stack([video, np.arange(int(counts.sum())) - firsts[video]], axis=1)  # (N, 2): (video, caption)
        self.first_clip = firsts  # (videos,) index in `clips` of each video's first clip
        if epoch_unit not in ("clip", "video"):
            raise DecembertError(f"train.epoch_unit = {epoch_unit!r}: use clip or video")
        self.epoch_unit = epoch_unit
        self.shuffle_candidates = shuffle_candidates
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.strict = strict
        self.skip_log = skip_log
        self.bad_videos: set[int] = set()  # found bad by this process

    def __len__(self) -> int:
        return len(self.records) if self.epoch_unit == "video" else len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> EncoderSample:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        return self.build(int(epoch), self.clip_index(int(epoch), int(index)))[0]

    def clip_index(self, epoch: int, item: int) -> int:
        """The clip (index into `clips`) that item `item` of `epoch` stands for: itself when the
        epoch unit is the clip; one of the video's clips, drawn anew each epoch, when it is the video."""
        if self.epoch_unit == "clip":
            return item
        n_clips = len(self.records[item].captions)
        return int(self.first_clip[item]) + int(np.random.default_rng([self.seed, epoch, item, 1]).integers(n_clips))

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch:
        return collate(
            samples, cls_id=self.cls_id, sep_id=self.sep_id, pad_id=self.pad_id, max_video_tokens=self.max_video_tokens
        )

    def _negative_source(self, rng: np.random.Generator, v: int, i: int) -> tuple[str, int, int]:
        cfg = self.config
        n_clips = len(self.records[v].captions)
        same = rng.random() < cfg.same_video_negatives
        if (same and n_clips > 1) or len(self.records) == 1:
            far = [j for j in range(n_clips) if abs(j - i) > cfg.neighbours]
            pool = far or [j for j in range(n_clips) if j != i]
            return "same-video", v, int(pool[rng.integers(len(pool))])
        other = int(rng.integers(len(self.records) - 1))
        other += other >= v  # any video but this one
        return "other-video", other, int(rng.integers(len(self.records[other].captions)))

    def _found_bad(self, v: int, problem: BadVideo) -> None:
        video_id = self.records[v].video_id
        if self.strict:
            raise DecembertError(
                f"video {video_id}: {problem}; "
                "fix or remove its files and run again, or leave out --strict to skip such videos"
            )
        self.bad_videos.add(v)
        print(f"note: video {video_id} skipped for the rest of the run: {problem}", file=sys.stderr)
        if self.skip_log is not None:
            append_jsonl(self.skip_log, {"video_id": video_id, "kind": problem.kind, "reason": str(problem)})
        if len(self.bad_videos) == len(self.records):
            raise DecembertError(f"every video of this split is bad (the last: {video_id}: {problem})")

    def build(self, epoch: int, index: int) -> tuple[EncoderSample, SampleInfo]:
        """The sample for clip `index` at `epoch` (deterministic), with how it was made; a clip of a
        bad video is replaced by the first clip of the next good one."""
        cfg = self.config
        while True:
            v = int(self.clips[index][0])
            if v not in self.bad_videos:
                rng = np.random.default_rng([self.seed, epoch, index])
                i = int(self.clips[index][1])
                record = self.records[v]
                window = clip_window(record.captions, i, record.seconds)
                try:
                    video_2d, video_3d = record.features(window)
                    dense_texts = record.dense_captions(window, rng) if cfg.use_dense else []
                    break
                except BadVideo as problem:
                    self._found_bad(v, problem)
            index = int(self.first_clip[(v + 1) % len(self.records)])

        negative: str | None = None
        source_v, source_i = v, i
        if rng.random() < cfg.negative_prob:
            negative, source_v, source_i = self._negative_source(rng, v, i)
        captions = self.records[source_v].captions
        lo, hi = max(0, source_i - cfg.neighbours), min(len(captions) - 1, source_i + cfg.neighbours)
        # candidate slot -> caption index: shuffled, so that no slot stands for a time offset
        order = lo + (rng.permutation(hi - lo + 1) if self.shuffle_candidates else np.arange(hi - lo + 1))
        asr_ids = tokenize_captions(self.tokenizer, [captions.text[j] for j in order], cfg.max_caption_tokens)
        dense_ids = tokenize_captions(self.tokenizer, dense_texts, cfg.dense_caption_tokens)
        budget = MAX_TEXT_POSITIONS - 1 - sum(len(x) + 1 for x in asr_ids)  # 1: [CLS]
        while dense_ids and sum(len(x) + 1 for x in dense_ids) > budget:
            dense_ids.pop()

        segments: list[TextSegment] = []
        masking = dict(mask_id=self.mask_id, vocab_size=self.vocab_size, replace=cfg.mask_replace)
        for ids in dense_ids:
            inputs, labels = mask_tokens(ids, cfg.mask_prob, rng, **masking)
            segments.append(TextSegment(inputs, TokenType.DENSE, labels=labels))
        for c, ids in enumerate(asr_ids):
            inputs, labels = mask_tokens(ids, cfg.mask_prob, rng, **masking)
            segments.append(TextSegment(inputs, TokenType.ASR, candidate=c, labels=labels))

        own, aligned = -1, -1
        if negative is None:
            own = int(np.flatnonzero(order == i)[0])
            if record.aligned_to is not None:
                matches = [c for c, j in enumerate(order) if record.aligned_to[j] == i]
                aligned = matches[0] if len(matches) == 1 else -1
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


def validation_indices(n: int, limit: int) -> list[int]:
    """At most `limit` clip indices spread evenly over 0..n-1 (all when n <= limit)."""
    if n <= limit:
        return list(range(n))
    return uniform_indices(n, limit).tolist()
