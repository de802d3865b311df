"""BERT-style masked language modelling on token ids."""

from __future__ import annotations

import numpy as np

from decembert_cli.data.batch import IGNORE_INDEX


def mask_tokens(
    ids: list[int],
    prob: float,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
) -> tuple[list[int], list[int]]:
    """Select each token with probability `prob`; of those 80% -> [MASK], 10% random, 10% kept.

    Returns (input ids, labels) with labels = the original id where selected, IGNORE_INDEX elsewhere.
    """
    n = len(ids)
    if n == 0:
        return [], []
    original = np.asarray(ids, dtype=np.int64)
    selected = rng.random(n) < prob
    action = rng.random(n)
    inputs = original.copy()
    inputs[selected & (action < 0.8)] = mask_id
    swap = selected & (action >= 0.8) & (action < 0.9)
    inputs[swap] = rng.integers(0, vocab_size, size=int(swap.sum()))
    labels = np.where(selected, original, IGNORE_INDEX)
    return inputs.tolist(), labels.tolist()
