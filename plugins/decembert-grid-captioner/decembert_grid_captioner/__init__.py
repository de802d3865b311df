"""grid: an example dense captioner. It cuts each frame into a grid of cells (`--option rows=R`,
`--option cols=C`; 2 x 2 by default) and captions each cell by what its pixels show most simply: the
nearest named colour of its mean and its brightness ("a dark red area"), the box being the cell. It needs
no model and no download, so it shows the captioner contract whole: a factory registered under
`decembert.captioners` returns an object with `caption(frames)` (a list of `Region`s per `Frame`, boxes in
that frame's pixels) and `meta()` (what decided the output, recorded in the caption store). A real
captioner loads its model in the factory (on `device`, under `autocast`) and runs it in `caption`.

    decembert dense-caption videos/ --backend grid --option rows=3 --option cols=3 --out dense_captions/
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from decembert_cli.api import DecembertError, Frame, Region

__version__ = "0.1.0"
COLOURS = {
    "red": (200, 40, 40),
    "orange": (230, 140, 30),
    "yellow": (225, 215, 50),
    "green": (50, 160, 60),
    "blue": (40, 80, 200),
    "purple": (130, 60, 160),
    "brown": (120, 80, 40),
    "grey": (128, 128, 128),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
}


def describe(mean: np.ndarray) -> str:
    """A cell's caption from its mean RGB colour."""
    rgb = np.asarray(mean, dtype=np.float64)
    name = min(COLOURS, key=lambda c: float(((rgb - np.asarray(COLOURS[c])) ** 2).sum()))
    light = rgb.mean()
    shade = "dark " if light < 70 and name != "black" else "bright " if light > 190 and name != "white" else ""
    return f"a {shade}{name} area"


class GridCaptioner:
    """Captions the cells of a rows x cols grid of each frame."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols

    def meta(self) -> dict[str, Any]:
        return {"backend": "grid", "model": f"{self.rows}x{self.cols} colour grid", "model_sha256": None}

    def caption(self, frames: list[Frame]) -> list[list[Region]]:
        out = []
        for frame in frames:
            pixels = frame.pixels
            height, width = pixels.shape[:2]
            regions = []
            for r in range(self.rows):
                for c in range(self.cols):
                    y0, y1 = r * height // self.rows, (r + 1) * height // self.rows
                    x0, x1 = c * width // self.cols, (c + 1) * width // self.cols
                    cell = pixels[y0:y1, x0:x1].reshape(-1, 3)
                    regions.append(Region(describe(cell.mean(0)), (float(x0), float(y0), float(x1), float(y1))))
            out.append(regions)
        return out


# settings dense-caption gives every backend, for generative models; a grid has nothing to generate
GENERATION = ("num_beams", "max_new_tokens")


def grid(
    model: str | None, device: torch.device, autocast: torch.dtype | None, options: dict[str, Any]
) -> GridCaptioner:
    """The `grid` backend's factory (no model: `--model` is refused; options `rows` and `cols`)."""
    if model is not None:
        raise DecembertError("the grid captioner has no model: leave out --model")
    unknown = sorted(set(options) - {"rows", "cols", *GENERATION})
    if unknown:
        raise DecembertError(f"the grid captioner has no option {unknown[0]!r} (it has rows and cols)")
    size = {}
    for key in ("rows", "cols"):
        value = str(options.get(key, 2))
        if not value.isdigit() or not 1 <= int(value) <= 16:
            raise DecembertError(f"--option {key}={value}: a whole number from 1 to 16")
        size[key] = int(value)
    return GridCaptioner(size["rows"], size["cols"])
