"""Fine-tuning and evaluation of a downstream task (a `decembert.tasks` plugin) on the shared encoder.

Fine-tuning trains `TaskModel` (the encoder + the task's head) with the pre-training loop, from a
pre-training checkpoint's encoder (or from `model.init` without one). Its checkpoints carry the
task name, the plugin's package and version, the task's state (e.g. its answer vocabulary) and the
resolved config, so `evaluate` needs nothing else. The engine never branches on a task's name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from decembert_cli import checkpoint as ckpt
from decembert_cli.config import load_config, save_config, to_dict
from decembert_cli.config.loader import apply_override, from_dict
from decembert_cli.config.schema import ModelConfig, NonNegativeInt, Positive, Seed, TrainConfig
from decembert_cli.data.batch import VideoTextBatch
from decembert_cli.engine.distributed import resolve_device, teardown
from decembert_cli.engine.loop import (
    Job,
    TrainResult,
    check_compile_backend,
    check_run_dir,
    run_folder_lock,
    train,
)
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_text, check_outputs, read_json_object, read_jsonl, regular_file, user_path
from decembert_cli.model import build_encoder, build_tokenizer, check_vocabulary
from decembert_cli.model.flops import ModelShape, batch_flops
from decembert_cli.model.weights import resolve_tokenizer
from decembert_cli.protocols import HeadOutput, PredictionsNotSupported, Task, TaskHead, TaskMetric, check_head_output
from decembert_cli.registry import tasks


@dataclass(frozen=True)
class FinetuneTrainConfig(TrainConfig):
    """Fine-tuning's defaults: the paper's optimiser (the pre-training one), a shorter schedule."""

    epochs: Positive = 10.0  # passes over the training items (the paper does not say; ours)
    validate_every: NonNegativeInt = 0  # steps between validations (0: only at the end)
    checkpoint_every: NonNegativeInt = 1000  # steps between checkpoints (and one at the end)


@functools.cache
def config_class(task_cls: type[Task]) -> type:
    """The fine-tuning config of a task: model, train, task (its own Config) and seed."""
    return dataclasses.make_dataclass(
        "FinetuneConfig",
        [
            ("model", ModelConfig, field(default_factory=ModelConfig)),
            ("train", FinetuneTrainConfig, field(default_factory=FinetuneTrainConfig)),
            ("task", task_cls.Config, field(default_factory=task_cls.Config)),
            ("seed", Seed, field(default=0)),
        ],
        frozen=True,
    )


@dataclass
class TaskOutput:
    """A `decembert_cli.protocols.ModelOutput` (what the training loop reads), with the head's output."""

    losses: dict[str, torch.Tensor]
    sums: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]
    weights: dict[str, float]
    stats: dict[str, torch.Tensor]
    head: HeadOutput  # what the head returned


class TaskModel(nn.Module):
    """The encoder and a task head: a `decembert_cli.protocols.TrainableModel`, which the training loop trains.

    The head's output is checked on the first training batch (`check_head_output`): one error naming the
    head class instead of a traceback from deep inside the loop."""

    def __init__(self, encoder: nn.Module, head: TaskHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self._head_checked = False

    def encode(self, batch: VideoTextBatch) -> Any:
        """The encoder's output for `batch`, with the head's extra encoder arguments (e.g. a seq2seq mask)."""
        return self.encoder(batch, **self.head.encoder_kwargs(batch))

    def _count(self, batch: VideoTextBatch) -> torch.Tensor:
        """What the loss is averaged over: the head's `target_count(batch)` (the items, or e.g. caption tokens)."""
        return torch.as_tensor(self.head.target_count(batch), device=batch.text_ids.device).float()

    def set_step(self, step: int, total_steps: int) -> None:
        """The loop's per-step hook: nothing in fine-tuning depends on the step."""

    def target_counts(self, batch: VideoTextBatch) -> dict[str, torch.Tensor]:
        return {"task": self._count(batch)}

    def forward(self, batch: VideoTextBatch, normalisers: dict[str, torch.Tensor] | None = None) -> TaskOutput:
        out = self.head(self.encode(batch), batch)
        if self.training and not self._head_checked:
            check_head_output(self.head, out, training=True)
            self._head_checked = True
        device = batch.text_ids.device
        stats = {"count": torch.tensor(float(batch.batch_size), device=device)}
        losses: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        count = self._count(batch)
        if out.loss is not None:
            # a sum over targets, divided by the targets of the whole global batch: the same update however it is split
            total = out.loss * count
            n = normalisers["task"] if normalisers else count
            losses = {"task": total / n, "total": total / n}
            sums = {"task": total.detach()}
            stats["loss_sum"] = total.detach().float()
            stats["loss_count"] = count
        return TaskOutput(losses, sums, {"task": count}, {"task": 1.0}, stats, out)

    @staticmethod
    def metrics(totals: dict[str, float]) -> dict[str, float]:
        """The loss over a pass (fine-tuning validates with the task's metric instead: `validation`)."""
        return {"loss": totals["loss_sum"] / max(totals.get("loss_count", 0.0), 1.0)} if "loss_sum" in totals else {}


def load_task(name: str) -> tuple[type[Task], Any]:
    """(Task class, its PluginInfo) of an installed task."""
    task_cls = tasks.load(name)
    return task_cls, tasks.available()[name]


def pretrained_encoder(
    path: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path, dict[str, torch.Tensor], dict | None]:
    """(model config dict, encoder state, file, whole pre-training state, BertConfig dict or None) of a
    pre-training checkpoint (file or run folder)."""
    file = ckpt.resolve(path)
    payload = ckpt.load_checkpoint(file)
    kind = payload.get("meta", {}).get("kind")
    if kind != "pretrain":
        raise DecembertError(
            f"{file} is a {kind or 'unknown'} checkpoint; fine-tuning starts from a pre-training checkpoint "
            "(decembert pretrain)"
        )
    state = {k[len("encoder.") :]: v for k, v in payload["model"].items() if k.startswith("encoder.")}
    return payload["config"]["model"], state, file, payload["model"], payload.get("meta", {}).get("bert_config")


@dataclass
class FinetuneSetup:
    job: Job
    task: Any
    config: Any
    train_items: int
    val_items: int  # the whole val split, scored as `evaluate` scores it
    init: str  # the pre-training checkpoint, or model.init


@dataclass
class Resolved:
    task_cls: type[Task]
    info: Any  # the plugin's PluginInfo (package, version)
    config: Any  # the task's FinetuneConfig
    encoder_state: dict[str, torch.Tensor] | None  # from the pre-training checkpoint
    pretrained: dict[str, torch.Tensor]  # the whole pre-training state ({} without a checkpoint)
    init: str  # the checkpoint file, or model.init
    bert_config: dict | None  # the checkpoint encoder's BertConfig (None: built from model.*)


def resolve(task_name: str, config_source: str | None, overrides: list[str], checkpoint: Path | None) -> Resolved:
    """The task and its config: defaults, the YAML file, the checkpoint's model settings, then --set."""
    task_cls, info = load_task(task_name)
    config: Any = load_config(config_class(task_cls), config_source, overrides)
    if checkpoint is None:
        return Resolved(task_cls, info, config, None, {}, config.model.init, None)

    model_dict, encoder_state, file, pretrained, bert_config = pretrained_encoder(checkpoint)
    given = {o.split("=", 1)[0].strip() for o in overrides if o.strip().startswith("model.")}
    merged = from_dict(
        ModelConfig, {**model_dict, **{k: v for k, v in to_dict(config.model).items() if f"model.{k}" in given}}
    )
    # the weights come from the checkpoint: nothing is downloaded, and the tokenizer stays the one it was trained with
    pinned = {**to_dict(merged), "init": "none", "tokenizer": resolve_tokenizer(merged)}
    config = dataclasses.replace(config, model=from_dict(ModelConfig, pinned))
    return Resolved(task_cls, info, config, encoder_state, pretrained, str(file), bert_config)


def prepare(
    task_name: str, config_source: str | None, overrides: list[str], run_dir: Path, checkpoint: Path | None
) -> FinetuneSetup:
    """Resolve the config (the checkpoint's model settings first), build datasets, model and job."""
    r = resolve(task_name, config_source, overrides, checkpoint)
    task_cls, config, init = r.task_cls, r.config, r.init
    if config.train.epoch_unit != "clip":
        raise DecembertError(
            f"train.epoch_unit = {config.train.epoch_unit}: one clip per video is pre-training's epoch; "
            "fine-tuning passes over every training item (leave train.epoch_unit at clip)"
        )
    torch.manual_seed(config.seed)
    task = task_cls(config.task)
    adapter = task.adapter()
    tokenizer = build_tokenizer(config.model)
    train_data = adapter.dataset("train", tokenizer, config.model, train=True)
    if len(train_data) == 0:
        raise DecembertError(
            f"task {task_name}: the training split has no usable items (decembert data check {task_name} says why)"
        )
    # validation is `evaluate` on the val split: the eval-mode dataset (every item), the task's own metric
    val_data = adapter.dataset("val", tokenizer, config.model, train=False) if adapter.has_split("val") else None
    encoder, mlm_state = build_encoder(config.model, bert_config=r.bert_config)
    if r.encoder_state is not None:
        try:
            missing, unexpected = encoder.load_state_dict(r.encoder_state, strict=False)
        except RuntimeError as exc:
            raise DecembertError(
                f"{init}: the encoder does not fit this model config ({str(exc).splitlines()[-1].strip()})"
            ) from None
        if missing or unexpected:
            raise DecembertError(
                f"{init}: the encoder does not fit this model config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    check_vocabulary(tokenizer, encoder)
    model = TaskModel(encoder, task.head(encoder))
    # a pre-training checkpoint's model, or model.init's MLM head
    head_state = r.pretrained or {f"mlm.{k}": v for k, v in mlm_state.items()}
    if head_state:  # e.g. retrieval starts from the VTM head, captioning from the MLM head
        model.head.from_pretraining(head_state)
    meta = {
        "kind": "finetune",
        "task": task_name,
        "task_package": r.info.package,
        "task_version": task_cls.version,
        "task_state": task.state(),
        "init": init,
        "bert_config": encoder.bert.config.to_dict(),
    }
    job = Job(
        model=model,
        train_data=train_data,
        collate=train_data.collate,
        config=config.train,
        seed=config.seed,
        run_dir=run_dir,
        saved_config=to_dict(config),
        meta=meta,
        validate=None if val_data is None else validation(task, val_data, config.train.batch_size),
        cost=_cost(ModelShape.of(encoder.bert.config, config.model.feature_dim_2d, config.model.feature_dim_3d)),
    )
    return FinetuneSetup(job, task, config, len(train_data), 0 if val_data is None else len(val_data), init)


def _cost(shape: ModelShape) -> Callable[[Any], tuple[float, int]]:
    """A task batch's training FLOPs and real tokens (the encoder and MLM-style targets; heads are small)."""

    def cost(batch: Any) -> tuple[float, int]:
        return batch_flops(shape, batch, constrained=False) if isinstance(batch, VideoTextBatch) else (0.0, 0)

    return cost


def finetune(setup: FinetuneSetup, *, resume: bool = False, **kwargs: Any) -> TrainResult:
    run_dir = setup.job.run_dir
    check_compile_backend(setup.config.train)
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        with run_folder_lock(run_dir, main):
            if not resume and main:
                check_run_dir(run_dir, resume=False, new=True)
                save_config(setup.config, run_dir / "config.yaml")
            return train(setup.job, resume=resume, **kwargs)
    finally:
        teardown()


def score_split(
    task: Task,
    model: TaskModel,
    data: Any,
    metric: TaskMetric,
    batch_size: int,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Run every item of `data` through the model into `metric`, as the task's `evaluate` does it (by default
    one batch at a time; e.g. retrieval re-ranks)."""
    model.eval()
    with torch.inference_mode():
        task.evaluate(model, data, metric, batch_size, device, progress)


def validation(task: Task, data: Any, batch_size: int) -> Callable[[nn.Module, torch.device], dict[str, float]]:
    """Fine-tuning's validation: the task's metric over every item of the val split, computed as `evaluate`
    computes it (same dataset, scoring and units), so the numbers in metrics.jsonl and evaluate's agree."""

    def validate(model: nn.Module, device: torch.device) -> dict[str, float]:
        metric = task.metric("val")
        metric.reset()
        was_training = model.training
        try:
            score_split(task, cast(TaskModel, model), data, metric, batch_size, device)
        finally:
            model.train(was_training)
        return metric.compute()

    return validate


@dataclass
class Evaluation:
    task: str
    split: str
    metrics: dict[str, float]
    main_metric: str
    items: int
    seconds: float
    metrics_path: Path
    predictions_path: Path
    protocol: dict[str, Any]  # what was scored how (split, gallery size, scoring)


def _finetuned_checkpoint(
    task_name: str, task_cls: type[Task], info: Any, checkpoint: Path
) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file and its payload; refused unless it was fine-tuned for this task by a plugin of
    the same major version."""
    file = ckpt.resolve(checkpoint)
    payload = ckpt.load_checkpoint(file)
    meta = payload.get("meta", {})
    if meta.get("kind") != "finetune":
        raise DecembertError(
            f"{file} is a {meta.get('kind') or 'unknown'} checkpoint; evaluate takes a fine-tuned one "
            f"(decembert finetune {task_name})"
        )
    if meta.get("task") != task_name:
        raise DecembertError(
            f"{file} was fine-tuned for task '{meta.get('task')}', not '{task_name}'; "
            f"run decembert evaluate {meta.get('task')}"
        )
    theirs, ours = str(meta.get("task_version", "?")), str(task_cls.version)
    if theirs.split(".")[0] != ours.split(".")[0]:
        raise DecembertError(
            f"{file} was made by {task_name} {theirs} ({meta.get('task_package')}); "
            f"the installed {info.package} has {ours}: "
            f"install version {theirs.split('.')[0]}.x of the plugin, or fine-tune again"
        )
    return file, payload


def evaluation_files(out: Path) -> list[Path]:
    """What `evaluate` writes into OUT. A new evaluation replaces an earlier one's files (`earlier_evaluation`);
    any other file of those names, e.g. a user's own predictions, is refused."""
    return [out / "metrics.json", out / "predictions.jsonl"]


def earlier_evaluation(path: Path) -> bool:
    """Whether `path` (a metrics record, or the predictions.jsonl beside OUT/metrics.json) was written by an
    earlier `evaluate`: the record is a JSON object with its task, split, main metric and metrics."""
    record = path if path.name.endswith("metrics.json") else path.with_name("metrics.json")
    found = read_json_object(record)
    return found is not None and {"task", "split", "main_metric", "metrics"} <= found.keys()


def _write_evaluation(out: Path, record: dict[str, Any], predictions: list[dict[str, Any]]) -> tuple[Path, Path]:
    """OUT/metrics.json (the record) and OUT/predictions.jsonl (one prediction per line)."""
    metrics_file, predictions_file = evaluation_files(out)
    metrics_path = atomic_write_text(metrics_file, json.dumps(record, indent=2) + "\n")
    lines = "".join(json.dumps(p) + "\n" for p in predictions)
    return metrics_path, atomic_write_text(predictions_file, lines)


def evaluate(
    task_name: str,
    checkpoint: Path,
    out: Path | None = None,
    *,
    split: str | None = None,
    overrides: Sequence[str] = (),
    batch_size: int = 64,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Score a fine-tuned checkpoint on a split; write OUT/metrics.json and OUT/predictions.jsonl
    (OUT defaults to RUN/eval-SPLIT next to the checkpoints)."""
    task_cls, info = load_task(task_name)
    file, payload = _finetuned_checkpoint(task_name, task_cls, info, checkpoint)
    meta = payload.get("meta", {})
    config: Any = from_dict(config_class(task_cls), payload["config"])
    for assignment in overrides:
        config = apply_override(config, assignment)

    # weights: the checkpoint's (nothing downloaded); the tokenizer: the one it was trained with
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, init="none", tokenizer=resolve_tokenizer(config.model))
    )
    task = task_cls(config.task, state=meta.get("task_state"))
    split = split or task_cls.eval_split
    out = Path(out) if out is not None else file.parent.parent / f"eval-{split}"
    check_outputs(evaluation_files(out), [file], replaces=earlier_evaluation)  # before any work
    adapter = task.adapter()
    if not adapter.has_split(split):
        raise DecembertError(
            f"task {task_name} has no {split} split here (decembert data check {task_name} lists the files)"
        )
    tokenizer = build_tokenizer(config.model)
    data = adapter.dataset(split, tokenizer, config.model, train=False)
    encoder, _ = build_encoder(config.model, bert_config=meta.get("bert_config"))
    model = TaskModel(encoder, task.head(encoder))
    ckpt.load_weights(model, payload["model"], file, "its settings and its task's state")
    dev = resolve_device(device, option="--device")
    model.to(dev).eval()
    metric = task.metric(split)
    metric.reset()
    started = time.perf_counter()
    n = len(data)
    score_split(task, model, data, metric, batch_size, dev, progress)
    metrics = metric.compute()
    seconds = time.perf_counter() - started
    protocol = metric.protocol() or {"split": split}
    record = {
        "task": task_name,
        "split": split,
        "checkpoint": str(file),
        "task_version": str(task_cls.version),
        "items": n,
        "protocol": protocol,
        "main_metric": task_cls.main_metric,
        "metrics": metrics,
        "seconds": round(seconds, 3),
    }
    metrics_path, predictions_path = _write_evaluation(out, record, metric.predictions())
    return Evaluation(
        task_name, split, metrics, task_cls.main_metric, n, seconds, metrics_path, predictions_path, protocol
    )


def score_predictions(
    task_name: str,
    predictions: Path,
    out: Path | None = None,
    *,
    split: str | None = None,
    config_source: str | None = None,
    overrides: Sequence[str] = (),
) -> Evaluation:
    """Score a predictions file (as `evaluate` writes it) against the task's references, without a model.

    Writes OUT/metrics.json (OUT defaults to the file's folder, as `<file stem>.metrics.json`)."""
    task_cls, _info = load_task(task_name)
    config: Any = load_config(config_class(task_cls), config_source, overrides)
    task = task_cls(config.task)
    split = split or task_cls.eval_split
    metric = task.metric(split)
    path = regular_file(user_path(predictions, "--predictions"), "the predictions file")
    target = Path(out) / "metrics.json" if out is not None else path.with_name(f"{path.stem}.metrics.json")
    check_outputs([target], [path], replaces=earlier_evaluation)  # before any work
    rows, _ = read_jsonl(path, torn_tail=False)
    started = time.perf_counter()
    metric.reset()
    try:
        metric.load(rows, str(path))
    except PredictionsNotSupported as exc:
        raise DecembertError(f"task {task_name} {exc}") from None
    metrics = metric.compute()
    seconds = time.perf_counter() - started
    protocol = metric.protocol() or {"split": split}
    record = {
        "task": task_name,
        "split": split,
        "predictions": str(path),
        "task_version": task_cls.version,
        "items": len(rows),
        "protocol": protocol,
        "main_metric": task_cls.main_metric,
        "metrics": metrics,
        "seconds": round(seconds, 3),
    }
    atomic_write_text(target, json.dumps(record, indent=2) + "\n")
    return Evaluation(task_name, split, metrics, task_cls.main_metric, len(rows), seconds, target, path, protocol)
