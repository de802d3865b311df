"""Deterministic, rank-sharded batches of (epoch, index) keys.

Optimiser step s of the run takes the global batch perm_e[b*G : (b+1)*G] where e, b = divmod(s,
steps per epoch) and perm_e is a permutation seeded by (seed, epoch). Process r takes its contiguous
share of it and splits that into `accumulation` micro-batches. The keys depend only on the step, so a
resumed run continues exactly and any number of processes sees the same global batches.

Length-aware batching (`lengths` and `window` > 0): each run of `window` consecutive global batches of
perm_e is sorted by item length and cut into batches again, whose order within the run is shuffled
(seeded by seed, epoch and run): a batch then holds items of similar length, so less of it is padding,
while which items an epoch visits, and roughly when, stays the permutation's. Still a function of the
step alone: resumable and the same for any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from decembert_cli.errors import DecembertError


class StepBatches:
    def __init__(
        self,
        size: int,
        *,
        global_batch: int,
        world: int,
        rank: int,
        accumulation: int,
        seed: int,
        start_step: int,
        total_steps: int,
        lengths: np.ndarray | None = None,
        window: int = 0,
    ) -> None:
        """lengths: (size,) item lengths (estimates suffice) for length-aware batching over `window`
        global batches; without them, or with window 0, plain shuffled batches."""
        if global_batch % (world * accumulation):
            raise DecembertError(
                f"train.batch_size={global_batch} must be a multiple of "
                f"processes x train.accumulation = {world} x {accumulation}"
            )
        if size < global_batch:
            raise DecembertError(f"only {size} training samples, fewer than train.batch_size={global_batch}; lower it")
        self.size = size
        self.global_batch = global_batch
        self.per_rank = global_batch // world
        self.micro = self.per_rank // accumulation
        self.rank = rank
        self.accumulation = accumulation
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.steps_per_epoch = size // global_batch  # the incomplete last batch of an epoch is dropped
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"{len(lengths)} lengths for {size} items")
        self.lengths = lengths if window > 0 else None
        self.window = window

    def permutation(self, epoch: int) -> np.ndarray:
        """`Generator.permutation(size)` (the same numbers: it shuffles an arange), held as int32 below
        2^31 items: HowTo100M's 136M clips then cost 0.55 GB per rank instead of 1.1 GB."""
        order = np.arange(self.size, dtype=np.int32 if self.size < 2**31 else np.int64)
        np.random.default_rng([self.seed, 1_000_003, epoch]).shuffle(order)
        return order

    def order(self, epoch: int) -> np.ndarray:
        """The items of `epoch` in batch order: the permutation, or its length-bucketed form."""
        perm = self.permutation(epoch)
        if self.lengths is None:
            return perm
        span = self.window * self.global_batch
        used = self.steps_per_epoch * self.global_batch  # items of the epoch's full batches
        rng = np.random.default_rng([self.seed, 1_000_033, epoch])
        out = perm.copy()
        for first in range(0, used, span):
            chunk = perm[first : min(used, first + span)]
            ranked = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches = ranked.reshape(-1, self.global_batch)
            out[first : first + len(chunk)] = batches[rng.permutation(len(batches))].reshape(-1)
        return out

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, perm = -1, np.empty(0, dtype=np.int32)
        for step in range(self.start_step, self.total_steps):
            epoch, b = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self.order(epoch)
            share = perm[b * self.global_batch + self.rank * self.per_rank :][: self.per_rank]
            for m in range(self.accumulation):
                yield [(epoch, int(i)) for i in share[m * self.micro : (m + 1) * self.micro]]
