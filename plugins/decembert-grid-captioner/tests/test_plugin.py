"""The captioner plugin: its captions, and the captioner contract as decembert dense-caption uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from decembert_grid_captioner import describe, grid

from decembert_cli.api import DecembertError, Frame


def test_each_cell_is_captioned_by_its_colour_with_its_box() -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:50, :100] = (200, 40, 40)  # top left: red
    pixels[50:, 100:] = (240, 240, 240)  # bottom right: white
    captioner = grid(None, torch.device("cpu"), None, {"rows": "2", "cols": "2", "num_beams": 3})
    (regions,) = captioner.caption([Frame("v", Path("v.mp4"), 0.0, pixels)])
    assert [r.caption for r in regions] == ["a red area", "a black area", "a black area", "a white area"]
    assert regions[0].box == (0.0, 0.0, 100.0, 50.0) and regions[3].box == (100.0, 50.0, 200.0, 100.0)
    assert describe(np.array([30, 30, 120])) == "a dark blue area"


def test_bad_options_are_one_error() -> None:
    with pytest.raises(DecembertError, match="rows=0: a whole number from 1 to 16"):
        grid(None, torch.device("cpu"), None, {"rows": "0"})
    with pytest.raises(DecembertError, match="no option 'size'"):
        grid(None, torch.device("cpu"), None, {"size": "3"})
    with pytest.raises(DecembertError, match="has no model"):
        grid("microsoft/Florence-2-large", torch.device("cpu"), None, {})
