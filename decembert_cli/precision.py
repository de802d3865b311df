"""Mixed precision: which autocast dtype a device gets, and whether gradients need a scaler."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from decembert_cli.errors import DecembertError


def autocast_dtype(precision: str, device: torch.device, option: str = "train.precision") -> torch.dtype | None:
    """None for fp32; bf16/fp16 as configured; auto = bf16 on GPUs that support it, else fp32.

    `option` names where the value came from in messages (a config key or a command-line flag)."""
    sep = " " if option.startswith("--") else "="
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise DecembertError(f"{option}{sep}fp16 needs a GPU; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DecembertError(f"this GPU does not support bf16; use {option}{sep}fp16")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
