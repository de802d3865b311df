"""DeCEMBERT pre-training: MLM + video-text matching + lambda * constrained attention loss.

VTM reads the MLM input (one forward pass, as the paper's code) or, with `vtm_input="unmasked"`, the
text before masking in a second forward pass (no constrained loss in it).

Every loss is computed as a sum with its count (masked tokens, samples, participating samples), so
the training engine can normalise by the count of the whole global batch: the same global batch
gives the same gradient however it is split into processes and accumulation steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decembert_cli.data.batch import IGNORE_INDEX, TokenType, VideoTextBatch
from decembert_cli.errors import DecembertError
from decembert_cli.model.encoder import DecembertEncoder, EncoderOutput
from decembert_cli.model.heads import MLMHead, VTMHead


@dataclass
class PretrainOutput:
    """A `decembert_cli.protocols.ModelOutput` (what the training loop reads), with the encoder's output."""

    encoder: EncoderOutput  # sequence, pooled, u over candidates, optional attention maps
    losses: dict[str, torch.Tensor]  # batch means: "mlm", "vtm", "constrained" (those that apply) and "total"
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # per loss: sum over its targets
    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # per loss: number of targets in this batch
    weights: dict[str, float] = field(default_factory=dict)  # per loss: weight in the total (0: reported only)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached summable counts for metrics


# nats: below this (with one offset taking COLLAPSE_SHARE per cent of argmax u) the attention has collapsed
COLLAPSE_ENTROPY = 0.1
COLLAPSE_SHARE = 90.0

# Validation metrics that are shares, reported in per cent like the paper's Table 6 and every task metric
# (losses and the entropy keep their own units); `argmax_u_offset<k>` are shares too.
PERCENT_METRICS = (
    "mlm_acc_asr",
    "mlm_acc_dense",
    "vtm_acc",
    "alignment_acc",
    "alignment_own_caption",
    "alignment_prev_caption",
    "mlm_acc_asr_positives",
    "mlm_acc_asr_swapped_video",
)


PERCENT = "percent"  # the mark of a metrics.jsonl validation line whose shares are in per cent


def is_percent_metric(key: str) -> bool:
    return key in PERCENT_METRICS or key.startswith("argmax_u_offset")


def in_percent(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl line with its shares in per cent: a validation line written before the `percent` mark
    held pre-training shares as fractions (scaled here); other lines are returned as they are."""
    if row.get("split") != "val" or row.get(PERCENT) is True:
        return row
    scaled = {
        k: 100 * v if is_percent_metric(k) and isinstance(v, (int, float)) and not isinstance(v, bool) else v
        for k, v in row.items()
    }
    return {**scaled, PERCENT: True}


def lambda_ramp(step: int, total_steps: int, warmup: float) -> float:
    """Share of lambda at optimiser step `step` (1-based): a linear ramp from 0 over `warmup` steps
    (warmup >= 1) or over that share of `total_steps` (warmup < 1); 1 without warm-up."""
    span = warmup if warmup >= 1 else warmup * total_steps
    return 1.0 if span <= 0 else min(1.0, step / span)


def collapse_warning(metrics: dict[str, float]) -> str | None:
    """A message when validation shows the collapse that entropy minimisation can find: near-zero
    entropy with one time offset taking nearly every argmax of u. Candidates share positions, so no
    slot can be learned; but one offset winning nearly always means u ignores which caption matches
    (on `sample` compare with alignment_own_caption / alignment_prev_caption)."""
    entropy = metrics.get("entropy")
    shares = {k[len("argmax_u_offset") :]: v for k, v in metrics.items() if k.startswith("argmax_u_offset")}
    if entropy is None or not shares:
        return None
    offset, share = max(shares.items(), key=lambda kv: kv[1])
    if entropy < COLLAPSE_ENTROPY and share > COLLAPSE_SHARE:
        return (
            f"constrained attention collapsed: entropy {entropy:.3f} nats and argmax u on "
            f"s_i{offset if offset != '+0' else ''} "
            f"for {share:.0f}% of positives (see the loss settings in `decembert pretrain --print-config`)"
        )
    return None


def candidate_count(batch: VideoTextBatch) -> torch.Tensor:
    """(B,) number of distinct candidate captions per sample (candidate ids are 0..n-1); from the layout
    `collate` computed when there is one (no host synchronisation)."""
    if batch.cand_mask is not None:
        return batch.cand_mask.any(-1).sum(-1)
    caption_id = batch.caption_id
    n = int(caption_id.max().item()) + 1 if caption_id.numel() else 0
    if n <= 0:
        return torch.zeros(caption_id.shape[0], dtype=torch.long, device=caption_id.device)
    present = caption_id.unsqueeze(-1) == torch.arange(n, device=caption_id.device)  # (B, Lt, n)
    return present.any(1).sum(-1)


def _mlm_targets(
    batch: VideoTextBatch, text: torch.Tensor, selected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hidden states (N, H), targets (N,) and token types (N,) of the masked tokens, in row-major
    order. With `collate`'s precomputed positions this is a gather of a known size; a boolean index
    would make the GPU report N to the host first."""
    assert batch.mlm_labels is not None
    if batch.mlm_index is None:
        return text[selected], batch.mlm_labels[selected], batch.text_type[selected]
    index = batch.mlm_index
    flat = text.reshape(-1, text.shape[-1])
    return flat.index_select(0, index), batch.mlm_labels.reshape(-1)[index], batch.text_type.reshape(-1)[index]


class DecembertForPretraining(nn.Module):
    def __init__(
        self,
        encoder: DecembertEncoder,
        *,
        constrained_lambda: float,
        constrained_on_negatives: bool,
        constrained_warmup: float = 0.0,
        constrained_scores: str = "logits",
        constrained_direction: str = "v2t",
        vtm_input: str = "masked",
        vtm_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if vtm_input not in ("masked", "unmasked"):
            raise DecembertError(f"loss.vtm_input = {vtm_input!r}: use masked or unmasked")
        if not vtm_weight >= 0:
            raise DecembertError(f"loss.vtm_weight = {vtm_weight}: use a weight >= 0 (the paper: 1)")
        if not constrained_warmup >= 0:
            raise DecembertError(
                f"loss.constrained_warmup = {constrained_warmup}: use 0 (no warm-up), a share of the run below 1, "
                "or steps"
            )
        config = encoder.bert.config
        self.encoder = encoder
        self.mlm = MLMHead(config, encoder.word_embeddings)
        self.vtm = VTMHead(config.hidden_size, config.hidden_dropout_prob)
        self.constrained_lambda = constrained_lambda
        self.constrained_on_negatives = constrained_on_negatives
        self.constrained_warmup = constrained_warmup
        self.constrained_scores = constrained_scores
        self.constrained_direction = constrained_direction
        self.vtm_input = vtm_input
        self.vtm_weight = vtm_weight
        self.lambda_scale = 1.0  # the warm-up's share of lambda at the current step (set_step)

    def set_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each optimiser step: lambda's warm-up follows the step."""
        self.lambda_scale = lambda_ramp(step, total_steps, self.constrained_warmup)

    def constrained_participants(self, batch: VideoTextBatch) -> torch.Tensor:
        """(B,) bool: samples the constrained loss applies to.

        A sample takes part if it has video and at least two candidate captions (with one, the
        entropy is 0 whatever the attention does) and, unless configured, is a VTM positive.
        """
        takes_part = batch.video_mask.any(-1) & (candidate_count(batch) >= 2)
        if batch.vtm_labels is not None and not self.constrained_on_negatives:
            takes_part = takes_part & (batch.vtm_labels == 1)
        return takes_part

    def target_counts(self, batch: VideoTextBatch) -> dict[str, torch.Tensor]:
        """Targets per loss in `batch`, known before the forward pass (the engine sums them globally)."""
        counts: dict[str, torch.Tensor] = {}
        if batch.mlm_labels is not None:
            counts["mlm"] = (batch.mlm_labels != IGNORE_INDEX).sum()
        if batch.vtm_labels is not None:
            counts["vtm"] = torch.full((), batch.batch_size, device=batch.text_ids.device)
        if self.constrained_lambda > 0:
            counts["constrained"] = self.constrained_participants(batch).sum()
        return counts

    def forward(
        self,
        batch: VideoTextBatch,
        *,
        normalisers: dict[str, torch.Tensor] | None = None,
        output_attentions: bool = False,
        keep_logits: bool = False,
        constrained: bool | None = None,
    ) -> PretrainOutput:
        """normalisers: divide each loss sum by these instead of this batch's counts (set by the engine).
        constrained: compute u and the entropy loss (default: when lambda > 0)."""
        want_constrained = self.constrained_lambda > 0 if constrained is None else constrained
        enc = self.encoder(
            batch,
            constrained=want_constrained,
            output_attentions=output_attentions,
            keep_logits=keep_logits,
            scores=self.constrained_scores,
            direction=self.constrained_direction,
        )
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        stats: dict[str, torch.Tensor] = {}

        if batch.mlm_labels is not None:
            selected = batch.mlm_labels != IGNORE_INDEX  # (B, Lt)
            hidden, targets, kinds = _mlm_targets(batch, enc.text, selected)
            logits = self.mlm(hidden)  # (N, vocab)
            sums["mlm"] = F.cross_entropy(logits.float(), targets, reduction="sum")
            counts["mlm"] = selected.sum()
            weights["mlm"] = 1.0
            with torch.no_grad():
                correct = logits.argmax(-1) == targets
                for name, kind in (("asr", int(TokenType.ASR)), ("dense", int(TokenType.DENSE))):
                    stats[f"mlm_correct_{name}"] = (correct & (kinds == kind)).sum()
                    stats[f"mlm_count_{name}"] = (kinds == kind).sum()
            if not self.training and batch.vtm_labels is not None and batch.batch_size > 1:
                stats.update(self.video_use_stats(batch, selected, correct))

        if batch.vtm_labels is not None:
            vtm_logits = self.vtm(self.vtm_pooled(batch, enc))  # (B,)
            sums["vtm"] = F.binary_cross_entropy_with_logits(
                vtm_logits.float(), batch.vtm_labels.float(), reduction="sum"
            )
            counts["vtm"] = torch.full((), batch.batch_size, device=vtm_logits.device)
            weights["vtm"] = self.vtm_weight
            with torch.no_grad():
                stats["vtm_correct"] = ((vtm_logits > 0).long() == batch.vtm_labels).sum()

        if enc.attention_entropy is not None:
            participants = self.constrained_participants(batch)
            weight = participants.to(enc.attention_entropy.dtype)
            sums["constrained"] = (enc.attention_entropy * weight).sum()
            counts["constrained"] = weight.sum()
            weights["constrained"] = self.constrained_lambda * self.lambda_scale
            if not self.training:  # validation diagnostics (host synchronisations: never in a training step)
                with torch.no_grad():
                    stats.update(self.alignment_stats(batch, enc, participants))

        losses = {name: sums[name] / counts[name].clamp(min=1) for name in sums}
        total = enc.pooled.new_zeros((), dtype=torch.float32)
        for name, w in weights.items():
            if w > 0:
                denominator = normalisers[name] if normalisers is not None else counts[name]
                total = total + w * sums[name] / denominator.clamp(min=1)
        losses["total"] = total
        for name in sums:
            stats[f"{name}_sum"] = sums[name].detach()
            stats[f"{name}_count"] = counts[name].detach()
        return PretrainOutput(encoder=enc, losses=losses, sums=sums, counts=counts, weights=weights, stats=stats)

    def vtm_pooled(self, batch: VideoTextBatch, enc: EncoderOutput) -> torch.Tensor:
        """(B, H) what the VTM head reads: the forward pass's pooled output, or with vtm_input "unmasked" that of
        a second pass on the text before masking (the same as the first when nothing was masked)."""
        if self.vtm_input == "masked" or batch.unmasked_ids is None:
            return enc.pooled
        return self.encoder(replace(batch, text_ids=batch.unmasked_ids)).pooled

    def video_use_stats(
        self, batch: VideoTextBatch, selected: torch.Tensor, correct: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Does the model read the video? MLM on the masked ASR tokens of VTM positives, once more with
        every sample's video features replaced by those of the sample before it in the batch (dense captions
        kept; validation orders its items so that this is a clip of another video, `validation_indices`): the
        drop in accuracy is what the video contributes. 0 means the video stream is ignored."""
        assert batch.mlm_labels is not None and batch.vtm_labels is not None, "needs MLM and VTM targets"
        swapped = replace(
            batch,
            video_2d=batch.video_2d.roll(1, 0),
            video_3d=batch.video_3d.roll(1, 0),
            video_mask=batch.video_mask.roll(1, 0),
        )
        enc = self.encoder(swapped)
        targets = batch.mlm_labels[selected]
        correct_swapped = self.mlm(enc.text[selected]).argmax(-1) == targets
        asr_of_positives = (batch.text_type == int(TokenType.ASR)) & (batch.vtm_labels == 1)[:, None]
        counted = asr_of_positives[selected]
        return {
            "video_own_correct": (correct & counted).sum(),
            "video_swapped_correct": (correct_swapped & counted).sum(),
            "video_count": counted.sum(),
        }

    @staticmethod
    def alignment_stats(
        batch: VideoTextBatch, enc: EncoderOutput, participants: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Summable counts of what u chose: by time offset (not slot), against the true caption when known.

        choice = argmax over candidates of u averaged over layers and heads."""
        stats: dict[str, torch.Tensor] = {}
        if enc.u_entropy is not None:
            stats["entropy_sum"] = (enc.u_entropy.float() * participants).sum()
            stats["entropy_count"] = participants.sum()
        if enc.candidate_u is None:
            return stats
        choice = enc.candidate_u.float().mean(dim=(1, 2)).argmax(-1)  # (B,)
        positives = participants if batch.vtm_labels is None else participants & (batch.vtm_labels == 1)
        if batch.candidate_offset is not None:
            chosen = batch.candidate_offset.gather(1, choice[:, None]).squeeze(1)  # (B,) time offset of the choice
            stats["argmax_count"] = positives.sum()
            for offset in torch.unique(batch.candidate_offset[positives]).tolist():
                if offset != IGNORE_INDEX:
                    stats[f"argmax_offset{int(offset):+d}"] = (positives & (chosen == offset)).sum()
        if batch.aligned is not None:
            known = positives & (batch.aligned >= 0)
            stats["align_correct"] = (known & (choice == batch.aligned)).sum()
            stats["align_own"] = (known & (batch.own_candidate == batch.aligned)).sum()
            stats["align_count"] = known.sum()
            if batch.candidate_offset is not None:
                true_offset = batch.candidate_offset.gather(1, batch.aligned.clamp(min=0)[:, None]).squeeze(1)
                stats["align_prev"] = (known & (true_offset == -1)).sum()
        return stats

    @staticmethod
    def metrics(totals: dict[str, float]) -> dict[str, float]:
        """Validation metrics from stats summed over batches and processes (the paper's Table 6 and more);
        shares (`is_percent_metric`) in per cent."""

        def ratio(num: str, den: str) -> float | None:
            return totals[num] / totals[den] if totals.get(den, 0) > 0 and num in totals else None

        metrics = {
            "mlm_acc_asr": ratio("mlm_correct_asr", "mlm_count_asr"),
            "mlm_acc_dense": ratio("mlm_correct_dense", "mlm_count_dense"),
            "vtm_acc": ratio("vtm_correct", "vtm_count"),
            "loss_mlm": ratio("mlm_sum", "mlm_count"),
            "loss_vtm": ratio("vtm_sum", "vtm_count"),
            "constrained_loss": ratio("constrained_sum", "constrained_count"),
            "alignment_acc": ratio("align_correct", "align_count"),
            "alignment_own_caption": ratio("align_own", "align_count"),
            "alignment_prev_caption": ratio("align_prev", "align_count"),
            "entropy": ratio("entropy_sum", "entropy_count"),
            "mlm_acc_asr_positives": ratio("video_own_correct", "video_count"),
            "mlm_acc_asr_swapped_video": ratio("video_swapped_correct", "video_count"),
        }
        for key in sorted(k for k in totals if k.startswith("argmax_offset")):
            metrics[f"argmax_u_offset{key[len('argmax_offset') :]}"] = ratio(key, "argmax_count")
        if totals.get("align_count", 0) > 0:
            metrics["alignment_n"] = totals["align_count"]
        return {k: float(100 * v if is_percent_metric(k) else v) for k, v in metrics.items() if v is not None}
