"""Captioner backends: what turns frames into regions. Registered under `decembert.captioners`.

A backend is built by a factory `(model: str | None, device: torch.device, autocast: dtype | None,
options: dict) -> Captioner`. `caption(frames)` gets RGB uint8 frames (H, W, 3) and returns, per
frame, its regions with boxes in that frame's pixels; `meta()` names the backend, the model and the
SHA-256 of its weights, and the settings that decide the output, for the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from decembert_cli.densecap.regions import Region, parse_florence2
from decembert_cli.errors import DecembertError
from decembert_cli.registry import Registry

captioners = Registry("decembert.captioners", "captioner")

TASK = "<DENSE_REGION_CAPTION>"
DEFAULT_FLORENCE2 = "microsoft/Florence-2-large"


class Captioner(Protocol):
    def meta(self) -> dict[str, Any]: ...

    def caption(self, frames: list[np.ndarray]) -> list[list[Region]]: ...


class Florence2:
    """Florence-2 through transformers (`Florence2ForConditionalGeneration`), task `<DENSE_REGION_CAPTION>`.

    `model` is a hub id or a local directory holding the processor and the weights, loaded with
    `from_pretrained` either way. Frames are captioned in batches with beam search (Florence-2's
    own default: 3 beams); the raw text is parsed by `parse_florence2`.
    """

    def __init__(self, model: str, device: torch.device, autocast: torch.dtype | None, options: dict[str, Any]) -> None:
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = Florence2ForConditionalGeneration.from_pretrained(model, dtype=autocast or torch.float32)
        except (OSError, ValueError) as exc:
            where = "directory" if Path(model).expanduser().exists() else "hub id"
            raise DecembertError(
                f"cannot load Florence-2 from {where} '{model}' ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                "pass --model with a hub id (online) or a local directory saved with save_pretrained"
            ) from None
        self.model.to(device).eval()
        self.name, self.device, self.dtype = model, device, autocast or torch.float32
        self.generate = {"max_new_tokens": 1024, "num_beams": 3, "do_sample": False, **options}

    def meta(self) -> dict[str, Any]:
        from decembert_cli.model.weights import state_sha256

        return {"backend": "florence2", "model": self.name, "model_sha256": state_sha256(self.model), "task": TASK,
                "generation": {k: v for k, v in sorted(self.generate.items())}}  # fmt: skip

    def raw(self, frames: list[np.ndarray]) -> list[str]:
        """The generated text of each frame, special and location tokens included."""
        inputs = self.processor(text=[TASK] * len(frames), images=list(frames), return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)) for k, v in inputs.items()}
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **self.generate)
        return self.processor.batch_decode(ids, skip_special_tokens=False)

    def caption(self, frames: list[np.ndarray]) -> list[list[Region]]:
        return [parse_florence2(text, (f.shape[1], f.shape[0])) for text, f in zip(self.raw(frames), frames)]


def florence2(model: str | None, device: torch.device, autocast: torch.dtype | None, options: dict[str, Any]) -> Florence2:
    """The `florence2` backend (default model microsoft/Florence-2-large)."""
    return Florence2(model or DEFAULT_FLORENCE2, device, autocast, options)
