"""Training FLOPs of a batch and model FLOPs utilisation (MFU).

Counted from the model's shape and the batch's real (non-padding) tokens, so MFU is useful work
over the device's peak: padding, recomputation and framework overhead all show up as lost
utilisation. A multiply-add is 2 FLOPs; training is 3x the forward pass (the backward pass computes
gradients for activations and for weights, each as costly as the forward). Per sample with L real
tokens (V video, the rest text), per encoder layer, forward:

    projections and feed-forward  2 * L * (4 * H^2 + 2 * H * F)     (Q, K, V, output; two FF matrices)
    attention                     2 * 2 * L^2 * H                    (Q K^T and softmax(.) V, every head)
    constrained-loss blocks       2 * V * C * H                      (video queries x the C candidate tokens)

plus, once: the video embedding 2 * V * ((D2 + D3) * H + H^2), and the MLM head on the N masked
tokens 2 * N * (H^2 + H * vocab). Embedding look-ups, norms, softmax and the loss reductions are not
counted (as in the usual MFU convention, e.g. PaLM's appendix B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from decembert_cli.data.batch import IGNORE_INDEX, VideoTextBatch

if TYPE_CHECKING:
    from transformers import BertConfig

# Dense peak FLOP/s (no sparsity) by device name fragment and autocast dtype (None: float32, counted as TF32
# where the GPU runs float32 matmuls on tensor cores). Vendor data sheets.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12},
    "H100": {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362.1e12, "fp16": 362.1e12, "fp32": 183.2e12},
}


@dataclass(frozen=True)
class ModelShape:
    """What the count needs from the model: widths and depth."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    video_in: int  # D2 + D3

    @classmethod
    def of(cls, bert_config: BertConfig, dim_2d: int, dim_3d: int) -> ModelShape:
        c = bert_config
        return cls(c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size, dim_2d + dim_3d)


def batch_flops(
    shape: ModelShape, batch: VideoTextBatch, *, constrained: bool = True, vtm_pass: bool = False
) -> tuple[float, int]:
    """(training FLOPs, real tokens) of one batch: forward + backward, real tokens only. vtm_pass: VTM reads a
    second pass over the unmasked text (loss.vtm_input), counted without the constrained blocks and MLM head.

    Read from the batch's masks on the CPU side, before it moves to the device (no synchronisation)."""
    h, f, n_layers = shape.hidden, shape.intermediate, shape.layers
    video = batch.video_mask.sum(1).to(torch.float64)  # (B,)
    text = batch.text_mask.sum(1).to(torch.float64)
    length = video + text
    tokens = float(length.sum())
    plain = n_layers * (2 * tokens * (4 * h * h + 2 * h * f) + 4 * h * float((length * length).sum()))
    plain += 2 * float(video.sum()) * (shape.video_in * h + h * h)  # the encoder without the constrained blocks
    forward = plain
    if constrained:
        candidate_tokens = (batch.caption_id >= 0).sum(1).to(torch.float64)
        forward += n_layers * 2 * h * float((video * candidate_tokens).sum())
    if vtm_pass and batch.vtm_labels is not None and batch.unmasked_ids is not None:
        forward += plain
    if batch.mlm_labels is not None:
        masked = float((batch.mlm_labels != IGNORE_INDEX).sum())
        forward += 2 * masked * (h * h + h * shape.vocab)
    return 3 * forward, int(tokens)


def peak_flops(device: torch.device, dtype: torch.dtype | None, configured_tflops: float = 0.0) -> float | None:
    """The device's dense peak FLOP/s for this precision: `configured_tflops` (train.peak_tflops) when set,
    else from PEAK_FLOPS by the GPU's name; None when unknown (a CPU): MFU is then not reported."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype is not None else "fp32"
    for fragment, peaks in PEAK_FLOPS.items():
        if fragment in name:
            return peaks[key]
    return None
