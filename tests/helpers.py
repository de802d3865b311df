"""Helpers for building small models and batches with padding in every segment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate

if TYPE_CHECKING:
    from transformers import BertConfig

    from decembert_cli.model.pretraining import DecembertForPretraining


def tiny_bert_config(layers: int = 3, heads: int = 4, hidden: int = 32, dropout: float = 0.0) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=120,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        type_vocab_size=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def random_samples(
    rng: np.random.Generator,
    *,
    batch_size: int,
    neighbours: int | list[int],
    dim: int = 16,
    vocab: int = 120,
    vtm: bool = True,
    mlm: bool = True,
) -> list[EncoderSample]:
    """Samples whose video lengths, dense-caption counts, caption counts and lengths all differ."""
    samples = []
    for i in range(batch_size):
        k = neighbours[i] if isinstance(neighbours, list) else neighbours
        t = int(rng.integers(2, 9))
        segments = []
        for _ in range(int(rng.integers(0, 3))):
            ids = rng.integers(5, vocab, size=int(rng.integers(1, 5))).tolist()
            labels = [x if rng.random() < 0.3 else -100 for x in ids] if mlm else None
            segments.append(TextSegment(ids, TokenType.DENSE, labels=labels))
        for j in range(2 * k + 1):
            ids = rng.integers(5, vocab, size=int(rng.integers(1, 7))).tolist()
            labels = [x if rng.random() < 0.3 else -100 for x in ids] if mlm else None
            segments.append(TextSegment(ids, TokenType.ASR, candidate=j, labels=labels))
        samples.append(
            EncoderSample(
                video_2d=torch.from_numpy(rng.normal(size=(t, dim))).float(),
                video_3d=torch.from_numpy(rng.normal(size=(t, dim))).float(),
                segments=segments,
                vtm_label=int(i % 3 != 2) if vtm else None,
            )
        )
    return samples


def random_batch(seed: int, **kwargs: Any) -> VideoTextBatch:
    return collate(random_samples(np.random.default_rng(seed), **kwargs), cls_id=2, sep_id=3, pad_id=0)


def build_pretraining(
    bert_config: BertConfig, *, dim: int = 16, lam: float = 1.0, on_negatives: bool = False, eager: bool = False
) -> DecembertForPretraining:
    from decembert_cli.model.encoder import DecembertEncoder
    from decembert_cli.model.pretraining import DecembertForPretraining

    encoder = DecembertEncoder(bert_config, dim_2d=dim, dim_3d=dim, max_video_tokens=100, eager=eager)
    return DecembertForPretraining(encoder, constrained_lambda=lam, constrained_on_negatives=on_negatives)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    header = Path(path).read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
