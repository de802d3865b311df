"""Masked language modelling on token ids: the paper's [MASK]-only replacement, or BERT's 80/10/10."""

from __future__ import annotations

from typing import Literal

import numpy as np

from decembert_cli.data.batch import IGNORE_INDEX

MaskReplace = Literal["mask", "bert"]


def mask_tokens(
    ids: list[int],
    prob: float,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    replace: MaskReplace = "mask",
) -> tuple[list[int], list[int]]:
    """Select each token with probability `prob` and replace it in the input.

    replace = "mask": every selected token becomes [MASK] (the paper, and its released code);
    "bert": 80% [MASK], 10% a random token, 10% kept (Devlin et al.).
    Returns (input ids, labels) with labels = the original id where selected, IGNORE_INDEX elsewhere.
    """
    n = len(ids)
    if n == 0:
        return [], []
    original = np.asarray(ids, dtype=np.int64)
    selected = rng.random(n) < prob
    inputs = original.copy()
    if replace == "mask":
        inputs[selected] = mask_id
    elif replace == "bert":
        action = rng.random(n)
        inputs[selected & (action < 0.8)] = mask_id
        swap = selected & (action >= 0.8) & (action < 0.9)
        inputs[swap] = rng.integers(0, vocab_size, size=int(swap.sum()))
    else:
        raise ValueError(f"mask replacement {replace!r}: use mask or bert")
    labels = np.where(selected, original, IGNORE_INDEX)
    return inputs.tolist(), labels.tolist()
