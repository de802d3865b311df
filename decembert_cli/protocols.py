"""The plugin contracts (typing.Protocol): what a package registers through our entry points.

- `decembert.tasks`: NAME = "package.module:Class", a `Task` class (e.g. msrvtt-qa), whose head is a
  `TaskHead` and whose metric a `TaskMetric` (base classes with the defaults of their optional hooks).
- `decembert.corpora`: NAME = "package.module:function", a `CorpusOpener`.
- `decembert.captioners`, `decembert.backbones_3d`: see `densecap.backends`, `features.backbones`.

A task's datasets read videos through `VideoStore` (decembert_cli.data.video_store), configured by
its Config, a subclass of `TaskSettings`: the same reader and settings as pre-training's. A plugin
imports these, the contracts below and everything else it uses from `decembert_cli.api`, the only
surface that is promised to stay.

`decembert_cli.testing.check_task` checks a Task against this contract on a tiny dataset; plugin
authors run it in their own tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    from decembert_cli.config.schema import DataConfig, ModelConfig
    from decembert_cli.data.batch import EncoderSample, VideoTextBatch
    from decembert_cli.data.scan import DataReport, VideoRecord


@dataclass
class DataCheck:
    """What `decembert data check` prints: files found, counts per split, problems; no model involved."""

    files: dict[str, str] = field(default_factory=dict)  # role -> path, or "missing: path"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> {what: count}
    details: dict[str, Any] = field(default_factory=dict)  # e.g. question types, answer coverage
    problems: list[str] = field(
        default_factory=list
    )  # one line each, e.g. "12 test videos lack features (first: video7010)"


class TaskDataset(Protocol):
    """One split of a task: its items, and their collation.

    Every item is keyed by `(epoch, index)`, whoever asks: training passes the epoch, which seeds the item's
    random choices (e.g. which dense captions, which negative), so a resumed run draws the same; evaluation
    and validation pass epoch 0, and a dataset built with `train=False` ignores it (its items are
    deterministic)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: tuple[int, int]) -> EncoderSample: ...

    def collate(self, samples: list[EncoderSample]) -> VideoTextBatch: ...


class DatasetAdapter(Protocol):
    """Annotations + stored features (and dense captions) of one dataset -> samples."""

    def check(self) -> DataCheck:
        """Read the annotation files only and report (decembert data check)."""
        ...

    def has_split(self, split: str) -> bool:
        """Whether the files of `split` (train / val / test) are there."""
        ...

    def dataset(self, split: str, tokenizer: Any, model: ModelConfig, *, train: bool) -> TaskDataset:
        """The samples of `split` (train / val / test). `train`: random choices per epoch and targets
        only where they can be learnt; otherwise deterministic and every item kept."""
        ...


@dataclass
class HeadOutput:
    """What `TaskHead.forward` returns.

    `values`: the task's outputs, which its `TaskMetric.update` reads (e.g. "logits", "score", "captions").
    `loss`: a scalar tensor, the mean over `TaskHead.target_count(batch)` targets (the batch's items by
    default), with a gradient; None for a batch without targets (e.g. an evaluation batch). The engine
    checks this on the first training batch of a run (`check_head_output`).
    """

    values: dict[str, Any] = field(default_factory=dict)
    loss: torch.Tensor | None = None


def check_head_output(head: nn.Module, out: Any, *, training: bool) -> HeadOutput:
    """`out` as a `HeadOutput`, or one error naming `head`'s class and what is wrong with what it returned
    (checked once per run on a training batch, and by `check_task`)."""
    name = type(head).__name__
    fix = "return decembert_cli.api.HeadOutput(values={...}, loss=<mean over the batch's targets>)"
    if not isinstance(out, HeadOutput):
        raise DecembertError(f"head {name}.forward returned a {type(out).__name__}, not a HeadOutput: {fix}")
    if not isinstance(out.values, dict):
        raise DecembertError(f"head {name}: HeadOutput.values is a {type(out.values).__name__}, not a dict")
    if not training:
        return out
    loss = out.loss
    if loss is None:
        raise DecembertError(f"head {name} returned no loss for a training batch (HeadOutput.loss is None): {fix}")
    if not isinstance(loss, torch.Tensor):
        raise DecembertError(f"head {name}: HeadOutput.loss is a {type(loss).__name__}, not a tensor: {fix}")
    if loss.dim() != 0:
        raise DecembertError(
            f"head {name}: HeadOutput.loss has shape {tuple(loss.shape)}; return its mean over the batch (a scalar), "
            "e.g. cross_entropy(..., reduction='mean')"
        )
    if not loss.is_floating_point() or not bool(torch.isfinite(loss.detach())):
        raise DecembertError(f"head {name}: HeadOutput.loss is {loss.item()} on the first training batch (not finite)")
    if not loss.requires_grad:
        raise DecembertError(
            f"head {name}: HeadOutput.loss has no gradient (computed under torch.no_grad, detached, or from .item()); "
            "compute it from the head's outputs"
        )
    return out


class TaskHead(nn.Module):
    """Base class of a task's head (what `Task.head` returns), on top of the shared encoder.

    `forward(encoder_output, batch)` takes the encoder's `EncoderOutput` and the `VideoTextBatch` and
    returns a `HeadOutput`: the task's values for its metric, and the loss when the batch has targets.
    Fine-tuning calls the methods below around it; override those the task needs.
    """

    def encoder_kwargs(self, batch: VideoTextBatch) -> dict[str, Any]:
        """Extra encoder arguments for `batch` (e.g. a seq2seq attention mask); none by default."""
        return {}

    def target_count(self, batch: VideoTextBatch) -> int | torch.Tensor:
        """What the loss averages over in `batch`: its items by default. A head whose loss averages over
        something else (e.g. caption tokens) returns that count (fine-tuning weighs each batch's loss by it)."""
        return batch.batch_size

    def from_pretraining(self, state: dict[str, torch.Tensor]) -> bool:
        """Start from pre-trained head weights: `state` is a pre-training checkpoint's model state (or
        `model.init`'s MLM head, as mlm.*). Returns whether it loaded any; by default it loads none and
        the head keeps its random initialisation."""
        return False


class PredictionsNotSupported(DecembertError):
    """Raised by `TaskMetric.load` of a metric that cannot score a predictions file."""


class TaskMetric(ABC):
    """Base class of a task's metric (what `Task.metric(split)` returns): reset, fed batch by batch
    (`update`) or from a predictions file (`load`), then computed."""

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def update(self, outputs: HeadOutput, batch: VideoTextBatch) -> None:
        """Take the head's output for `batch` (its `values`)."""

    @abstractmethod
    def compute(self) -> dict[str, float]: ...

    @abstractmethod
    def predictions(self) -> list[dict[str, Any]]:
        """One JSON-able record per evaluated item (written as predictions.jsonl)."""

    def protocol(self) -> dict[str, Any]:
        """What was scored how (e.g. gallery size, scoring), recorded in metrics.json; empty by default,
        and metrics.json then records the split alone."""
        return {}

    def load(self, rows: list[dict[str, Any]], source: str) -> None:
        """Take the rows of a predictions file (as `predictions()` writes them; `source` names it in
        messages) instead of `update`, so `decembert evaluate TASK --predictions FILE` scores it
        without a model. By default a metric cannot."""
        raise PredictionsNotSupported("cannot score a predictions file; evaluate a checkpoint instead (--checkpoint)")


# what a task class must have for the registry to list it (and `check_task` to check it further)
TASK_ATTRIBUTES = ("name", "version", "Config", "main_metric", "eval_split")


class Task(Protocol):
    """A downstream task: a family (QA, retrieval, captioning) bound to a dataset adapter.

    `Config` is a frozen dataclass of the task's settings (the `task.*` keys of a fine-tuning
    config, with a comment per field). `state()` is what the task learnt from the training data
    that evaluation needs (e.g. the answer vocabulary); it is saved in every checkpoint and given
    back as `state` when evaluating. A class that subclasses `Task` inherits the defaults of
    `evaluate` and `sample_settings`.
    """

    name: ClassVar[str]  # the user-facing name, e.g. msrvtt-qa
    version: ClassVar[str]  # the plugin's version, recorded in checkpoints (major must match to evaluate)
    Config: ClassVar[type]  # frozen dataclass of the task's settings
    main_metric: ClassVar[str]  # a key of TaskMetric.compute(), e.g. "accuracy"
    eval_split: ClassVar[str]  # the split `evaluate` scores by default (test)

    def __init__(self, config: Any, state: dict[str, Any] | None = None) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def adapter(self) -> DatasetAdapter: ...

    def head(self, encoder: nn.Module) -> TaskHead:
        """The task's head for this encoder (`encoder.hidden_size`; `word_embeddings` to tie an LM head):
        a `TaskHead`, whose `encoder_kwargs`, `target_count` and `from_pretraining` it may override."""
        ...

    def metric(self, split: str) -> TaskMetric:
        """The metric of `split` (its references, gallery, ...): a `TaskMetric`, whose `protocol()` and
        `load(rows, source)` (scoring a predictions file without a model) it may override."""
        ...

    def evaluate(
        self,
        model: Any,
        data: TaskDataset,
        metric: TaskMetric,
        batch_size: int,
        device: torch.device,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Score every item of `data` into `metric` (`decembert evaluate`; the model is in eval mode, under
        torch.inference_mode). `model` has `encoder`, `head` and `encode(batch)` (the encoder's output
        with the head's `encoder_kwargs`); `progress(done, total)` reports. The default is the generic
        scoring, `batch_size` items at a time; a task overrides it when its items are not scored one
        batch at a time (retrieval's re-ranking, captioning's generation)."""
        n = len(data)
        for first in range(0, n, batch_size):
            batch = data.collate([data[(0, i)] for i in range(first, min(n, first + batch_size))]).to(device)
            metric.update(model.head(model.encode(batch), batch), batch)
            if progress is not None:
                progress(min(n, first + batch_size), n)

    @staticmethod
    def sample_settings(sample_root: Path) -> dict[str, Any] | None:
        """The task.* keys that run the task on the built-in sample corpus at `sample_root` (the test suite
        then checks the task on that data too); None by default: the task cannot run on it."""
        return None


class ModelOutput(Protocol):
    """What the forward of a `TrainableModel` returns (pre-training's `PretrainOutput`, fine-tuning's
    `TaskOutput`), per loss name (e.g. "mlm", "vtm", "constrained"; "task" in fine-tuning)."""

    # per loss: its mean over this batch's targets; and "total", what is back-propagated: the weighted
    # sum of the losses, each sum divided by the forward's `normalisers` (without: this batch's counts)
    losses: dict[str, torch.Tensor]
    sums: dict[str, torch.Tensor]  # per loss: its sum over this batch's targets (the loop logs sums / counts)
    counts: dict[str, torch.Tensor]  # per loss: its number of targets in this batch
    weights: dict[str, float]  # per loss: its weight in "total" (0: reported only)
    stats: dict[str, torch.Tensor]  # summable tensors: summed over a validation pass, `metrics` reads them


class TrainableModel(Protocol):
    """What the training loop (`decembert_cli.engine.loop.train`) trains, besides the nn.Module it is:
    `DecembertForPretraining` and fine-tuning's `TaskModel`.

    Each loss is divided by its count over the whole global batch (all processes, all accumulation
    steps), so a global batch gives the same update however it is split.
    """

    def set_step(self, step: int, total_steps: int) -> None:
        """Called before each optimiser step (1-based), e.g. for a loss weight's warm-up."""
        ...

    def target_counts(self, batch: VideoTextBatch) -> dict[str, torch.Tensor]:
        """Targets per loss in `batch`, known before the forward (the loop sums them over the global batch)."""
        ...

    def __call__(
        self, batch: VideoTextBatch, *, normalisers: dict[str, torch.Tensor] | None = None, **eval_kwargs: Any
    ) -> ModelOutput:
        """The forward. `normalisers`: what divides each loss's sum in losses["total"] (its count over
        the global batch / processes; this batch's counts without them); `eval_kwargs`: the job's
        extra forward arguments when validating."""
        ...

    def metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Validation metrics from `stats` summed over a validation pass (all processes)."""
        ...


class CorpusOpener(Protocol):
    """Returns the usable videos of a pre-training corpus described by `config` (`data.*` keys).

    Videos that cannot be used are passed to `report.skip(video_id, BadVideo(reason, kind))` (which
    raises under --strict) and left out; lines fixed are counted with `report.fix`. `dims` are the
    (2D, 3D) feature widths the model expects. `progress(done, total)` may be called while scanning.
    A `VideoRecord` subclass may override `features()` and `dense_captions()` to read other layouts;
    everything after this call (tokenising into a `ClipTable`, split, sampling, masking, negatives)
    is shared. A corpus in HowTo100M's own layout can instead register an `IndexedCorpus`
    (decembert_cli.data.corpus_index), which pre-training reads through a persistent index.
    """

    def __call__(
        self,
        config: DataConfig,
        report: DataReport,
        dims: tuple[int, int],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[VideoRecord]: ...
