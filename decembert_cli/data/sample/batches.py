"""Generated encoder batches with the full pre-training structure (for `decembert check`, tests, benchmarks).

Captions are real English tokenised with the real tokenizer; video features are random. This is
plumbing data, not a learnable corpus (the `sample` corpus plants a signal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate_with
from decembert_cli.data.masking import mask_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_OBJECTS = ["onion", "pan", "knife", "bowl", "tomato", "dough", "bread", "egg", "pepper", "garlic"]
_ACTIONS = ["cut", "stir", "pour", "fold", "slice", "whisk", "press", "roll", "heat", "rinse"]
_FILLER = ["so", "now", "we", "just", "going", "to", "then", "really", "nice", "and", "okay", "the"]


@dataclass(frozen=True)
class BatchShape:
    batch_size: int = 4  # samples
    video_tokens: tuple[int, int] = (8, 30)  # min/max seconds of video per sample
    neighbours: int = 1  # k: ASR captions s_{i-k} .. s_{i+k} are the candidates
    caption_words: tuple[int, int] = (4, 10)  # min/max words per ASR caption
    dense_captions: int = 4  # dense captions per sample
    feature_dim_2d: int = 2048  # 2D feature width
    feature_dim_3d: int = 2048  # 3D feature width
    mask_prob: float = 0.2  # MLM probability on ASR and dense tokens


def _sentence(rng: np.random.Generator, words: int) -> str:
    core = [str(rng.choice(_ACTIONS)), "the", str(rng.choice(_OBJECTS))]
    filler = [str(w) for w in rng.choice(_FILLER, size=max(0, words - len(core)))]
    return " ".join(filler[: len(filler) // 2] + core + filler[len(filler) // 2 :])


def random_batch(
    tokenizer: PreTrainedTokenizerBase, shape: BatchShape, *, seed: int = 0, max_video_tokens: int = 100
) -> VideoTextBatch:
    """A batch with video, dense captions, 2k+1 candidate ASR captions, MLM labels and VTM labels."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)
    samples = []
    for _ in range(shape.batch_size):
        t = int(rng.integers(shape.video_tokens[0], shape.video_tokens[1] + 1))
        segments = []
        for _ in range(shape.dense_captions):
            ids = tokenizer.encode(f"a {rng.choice(_OBJECTS)} on a {rng.choice(_OBJECTS)}", add_special_tokens=False)
            inputs, labels = mask_tokens(ids, shape.mask_prob, rng, mask_id=mask_id, vocab_size=vocab)
            segments.append(TextSegment(inputs, TokenType.DENSE, labels=labels))
        for j in range(2 * shape.neighbours + 1):
            words = int(rng.integers(shape.caption_words[0], shape.caption_words[1] + 1))
            ids = tokenizer.encode(_sentence(rng, words), add_special_tokens=False)
            inputs, labels = mask_tokens(ids, shape.mask_prob, rng, mask_id=mask_id, vocab_size=vocab)
            segments.append(TextSegment(inputs, TokenType.ASR, candidate=j, labels=labels))
        samples.append(
            EncoderSample(
                video_2d=torch.randn(t, shape.feature_dim_2d, generator=gen),
                video_3d=torch.randn(t, shape.feature_dim_3d, generator=gen),
                segments=segments,
                vtm_label=int(rng.integers(0, 2)),
            )
        )
    return collate_with(tokenizer, samples, max_video_tokens)
