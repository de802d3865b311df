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
