"""AdamW with decoupled weight decay (not on norms and biases) and warm-up then linear decay."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from decembert_cli.config.schema import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices decay; biases, LayerNorm weights and other 1-D parameters do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for _name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied weights appear once
            continue
        seen.add(id(param))
        (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; `fused`: PyTorch's single-kernel implementation (CUDA parameters), the same update."""
    groups = parameter_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True if fused else None)


def warmup_linear(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at step s: linear 0 -> 1 over the warm-up, then linear to 0 at the end."""
    warm = max(0, min(total_steps, round(warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total_steps, warmup))
