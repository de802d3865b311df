"""Generic heads on the shared encoder: masked language modelling and video-text matching."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers import BertConfig


class MLMHead(nn.Module):
    """BERT's MLM head: dense + GELU + LayerNorm, then a decoder tied to the word embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states of the predicted tokens -> (N, vocab) logits."""
        return F.linear(self.transform(hidden), self.word_embeddings[0].weight, self.bias)


class VTMHead(nn.Module):
    """Video-text matching: a binary classifier on the mean-pooled sequence (no [CLS])."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) -> (B,) matching logits (higher = the text belongs to the video)."""
        return self.classifier(pooled).squeeze(-1)
