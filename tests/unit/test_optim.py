"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from decembert_cli.config import TrainConfig
from decembert_cli.engine.optim import build_optimizer, build_scheduler, warmup_linear
from tests.helpers import build_pretraining, tiny_bert_config


def test_no_weight_decay_on_norms_and_biases_and_tied_weights_once() -> None:
    model = build_pretraining(tiny_bert_config())
    opt = build_optimizer(model, TrainConfig(weight_decay=0.02, lr=3e-4, betas=(0.8, 0.9)))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["lr"] == 3e-4 and opt.defaults["betas"] == (0.8, 0.9)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len({id(p) for p in model.parameters()})


def test_warmup_then_linear_decay() -> None:
    factor = warmup_linear(total_steps=100, warmup=0.1)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [factor(s) for s in (10, 55, 99, 100)] == pytest.approx([1.0, 0.5, 1 / 90, 0.0])  # (100 - s) / 90
    assert warmup_linear(10, 0.0)(0) == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, 100, 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0)
