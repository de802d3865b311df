"""Captioner backends: what turns frames into regions. Registered under `decembert.captioners`.

A backend is built by a factory `(model: str | None, device: torch.device, autocast: dtype | None,
options: dict) -> backend`, and is one of two kinds:

- a `Captioner` (`florence2`, `oracle`): `caption(frames)` gets decoded `Frame`s (the video, the
  time, RGB uint8 pixels (H, W, 3)) and returns, per frame, its regions with boxes in that frame's
  pixels;
- an `Importer` (`import`): its inputs are dense captions other tools wrote, not videos;
  `videos(paths)` yields each video's frames read from them (`densecap.importers`).

`meta()` names the backend, the model and the SHA-256 of its weights, and the settings that decide
the output, for the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from decembert_cli.data.sample.corpus import SAMPLE_FORMAT, plans, scene_regions
from decembert_cli.densecap.regions import Region, parse_florence2
from decembert_cli.errors import DecembertError
from decembert_cli.model.weights import state_sha256
from decembert_cli.registry import Registry

captioners = Registry("decembert.captioners", "captioner")

TASK = "<DENSE_REGION_CAPTION>"
DEFAULT_FLORENCE2 = "microsoft/Florence-2-large"


@dataclass(frozen=True)
class Frame:
    """A decoded frame given to a `Captioner`: its video, the time, and RGB uint8 pixels (H, W, 3)."""

    video_id: str
    source: Path  # the video file
    time: float  # seconds
    pixels: np.ndarray  # (H, W, 3) uint8 RGB


class Captioner(Protocol):
    """A dense captioner (entry points `decembert.captioners`, built by a factory `(model, device, autocast,
    options) -> Captioner`): `caption(frames)` returns, per frame, its regions with boxes in that frame's
    pixels; `meta()` names the backend, its model and weights' SHA-256 and the settings that decide the
    output, recorded in the caption store."""

    def meta(self) -> dict[str, Any]: ...

    def caption(self, frames: list[Frame]) -> list[list[Region]]: ...


@runtime_checkable
class ImportBackend(Protocol):
    """A backend whose inputs are dense captions already written (`densecap.importers.Importer`)."""

    def meta(self) -> dict[str, Any]: ...

    def files(self, inputs: Iterable[Path]) -> tuple[list[Path], list[str]]: ...

    def videos(self, path: Path, interval: float) -> Iterator[Any]: ...


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
                f"cannot load Florence-2 from {where} '{model}' "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                "pass --model with a hub id (online) or a local directory saved with save_pretrained"
            ) from None
        self.model.to(device).eval()  # type: ignore[arg-type]  # transformers' @wraps(nn.Module.to) hides the bound self
        self.name, self.device, self.dtype = model, device, autocast or torch.float32
        self.generate = {"max_new_tokens": 1024, "num_beams": 3, "do_sample": False}
        for key, value in options.items():
            if key not in ("num_beams", "max_new_tokens"):
                raise DecembertError(f"florence2 has no option '{key}'; it takes --num-beams and --max-new-tokens")
            self.generate[key] = int(value)

    def meta(self) -> dict[str, Any]:
        return {
            "backend": "florence2",
            "model": self.name,
            "model_sha256": state_sha256(self.model),
            "task": TASK,
            "generation": {k: v for k, v in sorted(self.generate.items())},
        }

    def raw(self, frames: list[np.ndarray]) -> list[str]:
        """The generated text of each frame (RGB pixels), special and location tokens included."""
        inputs = self.processor(text=[TASK] * len(frames), images=list(frames), return_tensors="pt")
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **self.generate)
        return self.processor.batch_decode(ids, skip_special_tokens=False)

    def caption(self, frames: list[Frame]) -> list[list[Region]]:
        texts = self.raw([f.pixels for f in frames])
        return [parse_florence2(text, (f.pixels.shape[1], f.pixels.shape[0])) for text, f in zip(texts, frames)]


def florence2(
    model: str | None, device: torch.device, autocast: torch.dtype | None, options: dict[str, Any]
) -> Florence2:
    """The `florence2` backend (default model microsoft/Florence-2-large)."""
    return Florence2(model or DEFAULT_FLORENCE2, device, autocast, options)


class Oracle:
    """For the sample corpus only: what its rendered scene shows, as a perfect dense captioner would say.

    A sample video `ROOT/videos/{id}.mp4` (or a downstream clip, `ROOT/msrvtt/videos/{id}.mp4`) was
    rendered from a plan that `ROOT/meta.json` re-derives;
    the regions of the frame at t are `sample.corpus.scene_regions(plan, t)`: the object on screen
    with the box it is drawn in, and background captions (the same captions `sample-data` writes
    in the paper's layout when it synthesises features). No pixels are looked at. Any other video
    is refused: this backend exists so the demo runs the real command offline, not to caption data.
    """

    def __init__(self) -> None:
        self._plans: dict[Path, dict[str, dict]] = {}

    def meta(self) -> dict[str, Any]:
        return {"backend": "oracle", "model": f"{SAMPLE_FORMAT} scene description", "model_sha256": None}

    def _plan(self, frame: Frame) -> dict:
        folder = Path(frame.source).resolve().parent.parent  # ROOT/videos/ID.mp4 or ROOT/msrvtt/videos/ID.mp4
        root = (
            folder.parent
            if not (folder / "meta.json").is_file() and (folder.parent / "meta.json").is_file()
            else folder
        )
        if root not in self._plans:
            try:
                self._plans[root] = plans(root)
            except DecembertError as exc:
                raise DecembertError(
                    f"the oracle captioner reads only sample-corpus videos (ROOT/videos/ID.mp4): {exc}"
                ) from None
        plan = self._plans[root].get(frame.video_id)
        if plan is None:
            raise DecembertError(
                f"{frame.source}: the sample corpus in {root} has no video '{frame.video_id}'; "
                "the oracle captions only its videos"
            )
        return plan

    def caption(self, frames: list[Frame]) -> list[list[Region]]:
        out = []
        for f in frames:
            size = (f.pixels.shape[1], f.pixels.shape[0])
            out.append([Region(caption, box) for caption, box in scene_regions(self._plan(f), f.time, size)])
        return out


def oracle(model: str | None, device: torch.device, autocast: torch.dtype | None, options: dict[str, Any]) -> Oracle:
    """The `oracle` backend: the sample corpus' scene description (synthetic data only)."""
    if model or options:
        given = "--model" if model else f"--{sorted(options)[0].replace('_', '-')}"
        raise DecembertError(
            f"{given}: the oracle backend takes no model and no options (it reads the sample corpus' meta.json)"
        )
    return Oracle()
