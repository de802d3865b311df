"""The plugin contracts (typing.Protocol): what a package registers through our entry points.

- `decembert.tasks`: NAME = "package.module:Class", a `Task` class (e.g. msrvtt-qa).
- `decembert.corpora`: NAME = "package.module:function", a `CorpusOpener`.
- `decembert.captioners`, `decembert.backbones_3d`: see `densecap.backends`, `features.backbones`.

`decembert_cli.testing.check_task` checks a Task against this contract on a tiny dataset; plugin
authors run it in their own tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from decembert_cli.config.schema import DataConfig, ModelConfig
    from decembert_cli.data.batch import EncoderSample, VideoTextBatch
    from decembert_cli.data.corpus import DataReport, VideoRecord


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
    """One split of a task: items keyed by index or (epoch, index), and their collation."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: int | tuple[int, int]) -> EncoderSample: ...

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


class Metric(Protocol):
    def reset(self) -> None: ...

    def update(self, outputs: dict[str, torch.Tensor], batch: VideoTextBatch) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def predictions(self) -> list[dict[str, Any]]:
        """One JSON-able record per evaluated item (written as predictions.jsonl)."""
        ...


class Task(Protocol):
    """A downstream task: a family (QA, retrieval, captioning) bound to a dataset adapter.

    `Config` is a frozen dataclass of the task's settings (the `task.*` keys of a fine-tuning
    config, with a comment per field). `state()` is what the task learnt from the training data
    that evaluation needs (e.g. the answer vocabulary); it is saved in every checkpoint and given
    back as `state` when evaluating.
    """

    name: ClassVar[str]  # the user-facing name, e.g. msrvtt-qa
    version: ClassVar[str]  # the plugin's version, recorded in checkpoints (major must match to evaluate)
    Config: ClassVar[type]  # frozen dataclass of the task's settings
    main_metric: ClassVar[str]  # a key of Metric.compute(), e.g. "accuracy"
    eval_split: ClassVar[str]  # the split `evaluate` scores by default (test)

    def __init__(self, config: Any, state: dict[str, Any] | None = None) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def adapter(self) -> DatasetAdapter: ...

    def head(self, encoder: nn.Module) -> nn.Module:
        """The task's head for this encoder (`encoder.hidden_size`; `word_embeddings` to tie an LM head).

        `forward(encoder_output, batch)` returns a dict with the task's outputs, and "loss" (mean
        over the batch) when the batch has targets; "correct" (summable) lets fine-tuning report
        validation accuracy. Optional: `encoder_kwargs(batch)` (extra encoder arguments, e.g. a
        seq2seq attention mask), `from_pretraining(state)` (start from pre-trained head weights), and
        `target_count(batch)` with a "loss_sum" output when the loss averages over something other
        than the items (e.g. caption tokens)."""
        ...

    def metric(self, split: str) -> Metric:
        """The metric of `split` (its references, gallery, ...); optional `load(rows, source)` lets
        `decembert evaluate TASK --predictions FILE` score a predictions file without a model."""
        ...

    # Optional: `sample_settings(sample_root) -> dict` (a staticmethod), the task.* keys that run the
    # task on the built-in sample corpus; the test suite then checks it on that data too.


class CorpusOpener(Protocol):
    """Returns the usable videos of a pre-training corpus described by `config` (`data.*` keys).

    Videos that cannot be used are passed to `report.skip(video_id, BadVideo(reason, kind))` (which
    raises under --strict) and left out; lines fixed are counted with `report.fix`. `dims` are the
    (2D, 3D) feature widths the model expects. `progress(done, total)` may be called while scanning.
    A `VideoRecord` subclass may override `features()` and `dense_frames()` to read other layouts;
    everything after this call (split, sampling, masking, negatives) is shared.
    """

    def __call__(
        self,
        config: DataConfig,
        report: DataReport,
        dims: tuple[int, int],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[VideoRecord]: ...
