"""Generic heads on the shared encoder: masked language modelling, video-text matching and contrast."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from decembert_cli.data.batch import TokenType, VideoTextBatch
from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    from transformers import BertConfig

    from decembert_cli.model.encoder import EncoderOutput


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
    """Video-text matching: a binary classifier on the encoder's output.

    form "pooled" (the default): on the mean-pooled sequence (no [CLS]); the transformer itself must
    compare the clip with the text. form "pair" (`loss.vtm_head`, not the paper's): on the clip side's mean
    (video and dense-caption tokens) c and the ASR side's mean a, as [c, a, c * a, |c - a|], the sentence-pair
    features of InferSent and Sentence-BERT, so that agreement between the two sides is linear in them.
    """

    def __init__(self, hidden_size: int, dropout: float, form: str = "pooled") -> None:
        super().__init__()
        if form not in ("pooled", "pair"):
            raise DecembertError(f"loss.vtm_head = {form!r}: use pooled or pair")
        self.form = form
        width = hidden_size if form == "pooled" else 4 * hidden_size
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, 1))

    @staticmethod
    def form_of(state: dict[str, torch.Tensor], hidden_size: int) -> str:
        """The form of a saved head (keys without the `vtm.` prefix), read from its classifier's width."""
        return "pair" if state["classifier.1.weight"].shape[-1] == 4 * hidden_size else "pooled"

    def features(self, enc: EncoderOutput, batch: VideoTextBatch) -> torch.Tensor:
        """(B, H) or (B, 4H): what the classifier reads."""
        if self.form == "pooled":
            return enc.pooled
        text_type = batch.text_type
        clip = torch.cat([batch.video_mask, batch.text_mask & (text_type == int(TokenType.DENSE))], dim=1)
        words = torch.cat([torch.zeros_like(batch.video_mask), batch.text_mask & (text_type == int(TokenType.ASR))], 1)
        c, a = (masked_mean(enc.sequence, m) for m in (clip, words))
        return torch.cat([c, a, c * a, (c - a).abs()], dim=-1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B,) matching logits (higher = the text belongs to the video)."""
        return self.classifier(features).squeeze(-1)

    def forward(self, enc: EncoderOutput, batch: VideoTextBatch) -> torch.Tensor:
        """(B,) matching logits of the encoded batch."""
        return self.classify(self.features(enc, batch))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H), (B, L) bool -> (B, H) mean over the masked-in rows (0 where none)."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


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
