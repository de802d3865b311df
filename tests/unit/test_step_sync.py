"""A training step reads no shape from the data: collate precomputes the candidate layout and the MLM
positions on the CPU, so on a GPU the step never waits for the device to report a number."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from decembert_cli.data.batch import IGNORE_INDEX, candidate_layout
from tests.helpers import build_pretraining, random_batch, tiny_bert_config


def test_collate_precomputes_the_layout() -> None:
    batch = random_batch(3, batch_size=6, neighbours=[0, 1, 2, 1, 0, 2])
    assert batch.cand_index is not None and batch.cand_mask is not None and batch.mlm_index is not None
    index, mask = candidate_layout(batch.caption_id, offset=batch.video_mask.shape[1])
    assert torch.equal(batch.cand_index, index) and torch.equal(batch.cand_mask, mask)
    assert batch.mlm_labels is not None
    assert torch.equal(batch.mlm_index, (batch.mlm_labels != IGNORE_INDEX).flatten().nonzero().squeeze(1))


@contextmanager
def no_host_reads() -> Iterator[None]:
    """Fail on every Tensor -> Python conversion (what a device-to-host synchronisation is made of)."""

    def refuse(self: torch.Tensor, *args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor was read on the host during the training step")

    saved = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__int__", "__float__")}
    try:
        for name in saved:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("eager", [False, True])
def test_a_training_step_reads_nothing_back_and_equals_the_recomputing_path(eager: bool) -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(), eager=eager).train()
    batch = random_batch(1, batch_size=5, neighbours=[1, 2, 0, 1, 2])
    with no_host_reads():
        out = model(batch)
        out.losses["total"].backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    recomputed = model(batch.changed())  # no precomputed layout: the model derives it (reading shapes)
    recomputed.losses["total"].backward()
    for name in ("mlm", "vtm", "constrained", "total"):
        assert torch.equal(out.losses[name], recomputed.losses[name]), name
    again = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(grads, again, strict=True))


def test_without_the_layout_the_model_still_reads_shapes() -> None:
    """The guard works: the recomputing path does read from the data."""
    model = build_pretraining(tiny_bert_config()).train()
    batch = random_batch(7, batch_size=3, neighbours=1).changed()
    with pytest.raises(AssertionError, match="read on the host"), no_host_reads():
        model(batch)
