"""Generic heads on the shared encoder: masked language modelling, video-text matching and contrast."""

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


class VideoTextContrast(nn.Module):
    """Video-text contrast before fusion (`loss.contrastive_weight`; not in the paper, after ALBEF's
    image-text contrast): each sample's video, the mean of its video tokens' input embeddings, and its
    own text, the mean of those words' embeddings, are projected, L2-normalised and matched against the
    batch's others (InfoNCE, both directions, temperature 0.07). The video MLP learns to put into its
    tokens what the words of its clip say before the encoder fuses them."""

    def __init__(self, hidden_size: int, dim: int = 256, temperature: float = 0.07) -> None:
        super().__init__()
        self.video = nn.Linear(hidden_size, dim)
        self.text = nn.Linear(hidden_size, dim)
        self.temperature = temperature

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(N, H) pooled video and text of N samples, row i of each from the same clip -> (N,) loss per
        sample (the mean of its video-to-text and text-to-video cross-entropies)."""
        v = F.normalize(self.video(video.float()), dim=-1)
        t = F.normalize(self.text(text.float()), dim=-1)
        logits = v @ t.T / self.temperature  # (N, N)
        target = torch.arange(len(v), device=v.device)
        return 0.5 * (
            F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
        )
