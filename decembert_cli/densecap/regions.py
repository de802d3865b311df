"""Regions of a frame and the parser of Florence-2's `<DENSE_REGION_CAPTION>` output.

Florence-2 writes each region as its caption followed by four location tokens `<loc_x1><loc_y1>
<loc_x2><loc_y2>`, coordinates quantised into 1000 bins of the image's width and height; a caption
may be followed by several boxes. A bin b maps back to the pixel coordinate (b + 0.5) / 1000 * size
(the centre of the bin, as Florence-2's own post-processor does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BINS = 1000
_SPECIAL = re.compile(r"</?s>|<pad>")
_REGION = re.compile(r"([^<]*)((?:<loc_\d+>)+)")
_LOC = re.compile(r"<loc_(\d+)>")


@dataclass(frozen=True)
class Region:
    """One region of a frame: its caption, its box (x1, y1, x2, y2 in the frame's pixels, or None) and score."""

    caption: str
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in pixels of the original frame (None: unknown)
    score: float | None = None

    def as_dict(self) -> dict:
        box = None if self.box is None else [round(v, 2) for v in self.box]
        return {"caption": self.caption, "box": box, "score": self.score}


def dequantise(value: int, size: int) -> float:
    """Pixel coordinate of location bin `value` along an axis of `size` pixels."""
    return (min(max(value, 0), BINS - 1) + 0.5) / BINS * size


def parse_florence2(text: str, image_size: tuple[int, int]) -> list[Region]:
    """Regions from Florence-2's raw generated text; `image_size` = (width, height) of the frame.

    Special tokens are ignored, a caption with several boxes gives one region per box, boxes with
    no caption before them and trailing location tokens that do not make four are dropped.
    """
    width, height = image_size
    regions: list[Region] = []
    for match in _REGION.finditer(_SPECIAL.sub("", text)):
        caption = " ".join(match.group(1).split())
        locs = [int(v) for v in _LOC.findall(match.group(2))]
        if not caption:
            continue
        for i in range(0, len(locs) - 3, 4):
            x1, y1, x2, y2 = locs[i : i + 4]
            regions.append(
                Region(
                    caption,
                    (dequantise(x1, width), dequantise(y1, height), dequantise(x2, width), dequantise(y2, height)),
                )
            )
    return regions
