"""Contract checks for task plugins: our own tests and plugin authors' tests both call `check_task`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from decembert_cli.config import ModelConfig
from decembert_cli.config.loader import from_dict
from decembert_cli.engine.finetune import TaskModel, config_class, score_split
from decembert_cli.errors import DecembertError
from decembert_cli.model import build_encoder, build_tokenizer
from decembert_cli.protocols import TASK_ATTRIBUTES, DataCheck, Task, TaskHead, TaskMetric


@dataclass
class TaskCheck:
    data: DataCheck
    loss: float
    metrics: dict[str, float]
    predictions: int


def check_task(
    task_cls: type[Task],
    task_settings: dict[str, Any],
    *,
    feature_dims: tuple[int, int],
    eval_split: str | None = None,
    items: int = 4,
) -> TaskCheck:
    """Check a Task class against the contract on a small dataset, on the CPU, with a tiny random encoder.

    `task_settings` are the task's `task.*` keys (e.g. {"root": folder with tiny data});
    `feature_dims` the (2D, 3D) widths of its stored features. Checks: the declared attributes and
    `evaluate`; the config class builds from the settings; `check()` reads the files; the head is a
    `TaskHead`, and a training batch of `items` collates and its `HeadOutput` has a finite scalar loss
    (the same check and message as fine-tuning's) whose gradient reaches the head and the encoder; the
    task's state round-trips into a new instance; the metric is a `TaskMetric`, and over the evaluation
    split (keep it small) it holds the main metric, finite, and JSON-able predictions. Raises
    AssertionError naming what broke.
    """
    for attribute in TASK_ATTRIBUTES:
        assert hasattr(task_cls, attribute), f"{task_cls.__name__} has no class attribute '{attribute}'"
    assert callable(getattr(task_cls, "evaluate", None)), (
        f"{task_cls.__name__} has no evaluate(): subclass decembert_cli.protocols.Task for the default one"
    )
    config: Any = from_dict(config_class(task_cls), {"task": task_settings}).task
    model_cfg = ModelConfig(
        arch="tiny", init="none", feature_dim_2d=feature_dims[0], feature_dim_3d=feature_dims[1], dropout=0.0
    )
    task = task_cls(config)
    adapter = task.adapter()
    report = adapter.check()
    assert isinstance(report, DataCheck), "adapter.check() must return a DataCheck"
    tokenizer = build_tokenizer(model_cfg)
    train = adapter.dataset("train", tokenizer, model_cfg, train=True)
    assert len(train) >= items, f"the training split has {len(train)} items; the check needs {items}"
    torch.manual_seed(0)
    encoder, _ = build_encoder(model_cfg)
    head = task.head(encoder)
    assert isinstance(head, TaskHead), f"{task_cls.__name__}.head() returned a {type(head).__name__}, not a TaskHead"
    model = TaskModel(encoder, head)
    batch = train.collate([train[(0, i)] for i in range(items)])
    try:
        out = model(batch)  # checks the head's output (`check_head_output`), as fine-tuning does
    except DecembertError as exc:
        raise AssertionError(str(exc)) from None
    loss = out.losses["total"]
    assert math.isfinite(loss.item()), f"the training loss is {loss.item()}"
    loss.backward()
    for part, module in (("head", model.head), ("encoder", model.encoder)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), f"no gradient reaches the {part}"
    again = task_cls(config, state=json.loads(json.dumps(task.state())))  # as saved in a checkpoint
    assert sum(p.numel() for p in again.head(encoder).parameters()) == sum(
        p.numel() for p in model.head.parameters()
    ), "a task rebuilt from its state() has another head"
    split = eval_split or task_cls.eval_split
    data = again.adapter().dataset(split, tokenizer, model_cfg, train=False)
    metric = again.metric(split)
    assert isinstance(metric, TaskMetric), (
        f"{task_cls.__name__}.metric() returned a {type(metric).__name__}, not a TaskMetric"
    )
    metric.reset()
    score_split(again, model, data, metric, items, torch.device("cpu"))
    metrics = metric.compute()
    assert task_cls.main_metric in metrics, f"the metric has no '{task_cls.main_metric}' (it has {sorted(metrics)})"
    assert all(math.isfinite(v) for v in metrics.values()), f"non-finite metrics: {metrics}"
    predictions = metric.predictions()
    json.dumps(predictions)
    return TaskCheck(report, loss.item(), metrics, len(predictions))
