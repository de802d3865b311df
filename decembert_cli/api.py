"""The public API for plugins: everything a task, corpus or captioner package may import from decembert.

Import from here, never from the modules behind it: the names below keep their meaning across minor
versions, the rest of `decembert_cli` may change. `plugins/decembert-mc` is a complete example that
uses nothing else (a test checks it).

- Contracts (decembert_cli.protocols): `Task`, `DatasetAdapter`, `TaskDataset`, `CorpusOpener`,
  `DataCheck` (what `decembert data check` prints), and the base classes a task's head and metric
  subclass, `TaskHead` and `TaskMetric`, with the defaults of their optional hooks.
- Settings: `TaskSettings` (subclass it for a task's `Config`: root, features, dense captions,
  train_fraction, require_features), `VideoSettings`, and the range types of config fields.
- Videos: `VideoStore` reads a video's feature streams and dense captions (the reader pre-training
  uses); `dataset_file` resolves a file setting under `task.root`.
- Samples: `EncoderSample` with `TextSegment`s of a `TokenType`, `tokenize_captions`, and
  `collate_with` (a list of samples -> `VideoTextBatch`); heads receive an `EncoderOutput` and return a `HeadOutput`.
- Corpora: a `CorpusOpener` returns records; a corpus in HowTo100M's layout can register an
  `IndexedCorpus` instead, read through the persistent corpus index.
- Models: `load_pretrained(FOLDER_OR_HUB_ID)` returns a `Pretrained` (model, encoder, tokenizer,
  config, task) from a `decembert export` folder (safetensors), a checkpoint or a run;
  `export_model` writes such a folder.
- Errors: raise `DecembertError` with a message naming the file, key or value and how to fix it.
- Tests: `check_task` checks a Task class against the contract on a tiny dataset;
  `generate_sample_corpus` writes the built-in sample corpus (with MSR-VTT-format clips in msrvtt/).
"""

from __future__ import annotations

from decembert_cli.config.schema import (
    Count,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    Probability,
    Seed,
    Share,
    TaskSettings,
    VideoSettings,
)
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate, collate_with
from decembert_cli.data.corpus_index import IndexedCorpus
from decembert_cli.data.sample.corpus import generate as generate_sample_corpus
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, dataset_file, resolve
from decembert_cli.errors import DecembertError
from decembert_cli.export import Pretrained, export_model, load_pretrained
from decembert_cli.model.encoder import EncoderOutput
from decembert_cli.protocols import (
    CorpusOpener,
    DataCheck,
    DatasetAdapter,
    HeadOutput,
    PredictionsNotSupported,
    Task,
    TaskDataset,
    TaskHead,
    TaskMetric,
)
from decembert_cli.testing import check_task

__all__ = [
    "Count",
    "CorpusOpener",
    "DataCheck",
    "DatasetAdapter",
    "DecembertError",
    "EncoderOutput",
    "EncoderSample",
    "HeadOutput",
    "IndexedCorpus",
    "Fraction",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "PredictionsNotSupported",
    "Pretrained",
    "Probability",
    "Seed",
    "Share",
    "Task",
    "TaskDataset",
    "TaskHead",
    "TaskMetric",
    "TaskSettings",
    "TextSegment",
    "TokenType",
    "VideoSettings",
    "VideoStore",
    "VideoTextBatch",
    "check_task",
    "collate",
    "collate_with",
    "dataset_file",
    "export_model",
    "generate_sample_corpus",
    "load_pretrained",
    "resolve",
    "tokenize_captions",
]
