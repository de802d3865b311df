"""DeCEMBERT pre-training: MLM + video-text matching + lambda * constrained attention loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from decembert_cli.data.batch import IGNORE_INDEX, TokenType, VideoTextBatch
from decembert_cli.model.encoder import DecembertEncoder, EncoderOutput
from decembert_cli.model.heads import MLMHead, VTMHead


@dataclass
class PretrainOutput:
    encoder: EncoderOutput  # sequence, pooled, u over candidates, optional attention maps
    losses: dict[str, torch.Tensor]  # "mlm", "vtm", "constrained" (those that apply) and "total"
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached counts for accuracies (summable)


class DecembertForPretraining(nn.Module):
    def __init__(
        self,
        encoder: DecembertEncoder,
        *,
        constrained_lambda: float,
        constrained_on_negatives: bool,
    ) -> None:
        super().__init__()
        config = encoder.bert.config
        self.encoder = encoder
        self.mlm = MLMHead(config, encoder.word_embeddings)
        self.vtm = VTMHead(config.hidden_size, config.hidden_dropout_prob)
        self.constrained_lambda = constrained_lambda
        self.constrained_on_negatives = constrained_on_negatives

    def forward(
        self,
        batch: VideoTextBatch,
        *,
        output_attentions: bool = False,
        keep_logits: bool = False,
        constrained: bool | None = None,
    ) -> PretrainOutput:
        """constrained: compute u and the entropy loss (default: when lambda > 0)."""
        want_constrained = self.constrained_lambda > 0 if constrained is None else constrained
        enc = self.encoder(
            batch, constrained=want_constrained, output_attentions=output_attentions, keep_logits=keep_logits
        )
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        total = enc.pooled.new_zeros(())

        if batch.mlm_labels is not None:
            selected = batch.mlm_labels != IGNORE_INDEX  # (B, Lt)
            logits = self.mlm(enc.text[selected])  # (N, vocab)
            targets = batch.mlm_labels[selected]
            losses["mlm"] = F.cross_entropy(logits.float(), targets)
            total = total + losses["mlm"]
            with torch.no_grad():
                correct = logits.argmax(-1) == targets
                kinds = batch.text_type[selected]
                for kind in (TokenType.ASR, TokenType.DENSE):
                    name = kind.name.lower()
                    stats[f"mlm_correct_{name}"] = (correct & (kinds == kind)).sum()
                    stats[f"mlm_count_{name}"] = (kinds == kind).sum()

        if batch.vtm_labels is not None:
            vtm_logits = self.vtm(enc.pooled)  # (B,)
            losses["vtm"] = F.binary_cross_entropy_with_logits(vtm_logits.float(), batch.vtm_labels.float())
            total = total + losses["vtm"]
            with torch.no_grad():
                stats["vtm_correct"] = ((vtm_logits > 0).long() == batch.vtm_labels).sum()
                stats["vtm_count"] = torch.tensor(batch.batch_size, device=vtm_logits.device)

        if enc.attention_entropy is not None:
            # A sample takes part if it has video and at least two candidate captions (with one, the
            # entropy is 0 whatever the attention does) and, unless configured, is a VTM positive.
            takes_part = batch.video_mask.any(-1) & (enc.candidate_valid.sum(-1) >= 2)
            if batch.vtm_labels is not None and not self.constrained_on_negatives:
                takes_part = takes_part & (batch.vtm_labels == 1)
            weight = takes_part.to(enc.attention_entropy.dtype)
            losses["constrained"] = (enc.attention_entropy * weight).sum() / weight.sum().clamp(min=1.0)
            if self.constrained_lambda > 0:
                total = total + self.constrained_lambda * losses["constrained"]
            stats["constrained_sum"] = (enc.attention_entropy.detach() * weight).sum()
            stats["constrained_count"] = weight.sum()

        losses["total"] = total
        return PretrainOutput(encoder=enc, losses=losses, stats=stats)
