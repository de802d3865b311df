"""The step sampler's permutation: numpy's own, held compactly (HowTo100M has 136M clips per epoch)."""

from __future__ import annotations

import numpy as np

from decembert_cli.engine.sampler import StepBatches


def test_the_permutation_is_numpys_in_int32_and_ranks_split_each_batch() -> None:
    common = dict(global_batch=8, world=2, accumulation=2, seed=3, start_step=0, total_steps=10)
    ranks = [StepBatches(1003, rank=r, **common) for r in range(2)]
    perm = ranks[0].permutation(4)
    assert perm.dtype == np.int32
    assert np.array_equal(perm, np.random.default_rng([3, 1_000_003, 4]).permutation(1003))  # as before (resumes)
    batches = [list(r) for r in ranks]
    for step in range(10):
        keys = [k for r in range(2) for k in batches[r][2 * step] + batches[r][2 * step + 1]]
        assert len(keys) == 8 == len(set(keys)) and {e for e, _ in keys} == {step // (1003 // 8)}


def _padded(batches: list[list[tuple[int, int]]], lengths: np.ndarray) -> tuple[int, int]:
    """(real, padded) token counts when each batch is padded to its longest item."""
    real = sum(int(lengths[[i for _, i in b]].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[[i for _, i in b]].max()) for b in batches)
    return real, padded


def test_length_aware_batches_keep_the_epoch_resume_and_ranks_and_pad_less() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=1000).astype(np.uint16)
    common = dict(global_batch=16, world=2, accumulation=1, seed=5, total_steps=124)  # two epochs of 62
    plain = [list(StepBatches(1000, rank=r, start_step=0, **common)) for r in range(2)]
    bucketed = [list(StepBatches(1000, rank=r, start_step=0, lengths=lengths, window=8, **common)) for r in range(2)]
    steps_per_epoch = 1000 // 16
    for epoch in range(2):  # the same items each epoch, in other batches
        span = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        items = [sorted(k for r in range(2) for b in runs[r][span] for k in b) for runs in (plain, bucketed)]
        assert items[0] == items[1]
    # the global batches of a window cover disjoint stretches of its length order
    for window in range(0, steps_per_epoch, 8):
        spans = []
        for step in range(window, min(window + 8, steps_per_epoch)):
            batch = lengths[[i for r in range(2) for _, i in bucketed[r][step]]]
            spans.append((int(batch.min()), int(batch.max())))
        spans.sort()
        assert all(spans[j][1] <= spans[j + 1][0] for j in range(len(spans) - 1)), spans
    # resumable: starting at step 77 gives the same batches as the whole run from there
    resumed = list(StepBatches(1000, rank=1, start_step=77, lengths=lengths, window=8, **common))
    assert resumed == bucketed[1][77:]
    real, padded = _padded(plain[0] + plain[1], lengths)
    real_b, padded_b = _padded(bucketed[0] + bucketed[1], lengths)
    assert real == real_b and 1 - real_b / padded_b < 0.5 * (1 - real / padded)
