"""The public API for plugins: everything a task, corpus or captioner package may import from decembert.

Import from here, never from the modules behind it: the names below keep their meaning across minor
versions, the rest of `decembert_cli` may change. `decembert_cli` ships `py.typed`, so a type checker
sees these types (the example plugin passes `mypy --strict` against them). `plugins/decembert-mc` is a
complete example that uses nothing else (a test checks it).

- Task contracts (decembert_cli.protocols): `Task`, `DatasetAdapter`, `TaskDataset` (items keyed by
  `(epoch, index)`), `DataCheck` (what `decembert data check` prints), and the base classes a task's
  head and metric subclass, `TaskHead` (its `forward(EncoderOutput, VideoTextBatch)` returns a
  `HeadOutput`) and `TaskMetric`, with the defaults of their optional hooks.
- Settings: `TaskSettings` (subclass it for a task's `Config`: root, features, dense captions,
  train_fraction, require_features), `VideoSettings`, `ModelConfig` (what `dataset(..., model)` gets),
  and the range types of config fields.
- Videos: `VideoStore` reads a video's feature streams and dense captions (the reader pre-training
  uses); `dataset_file` resolves a file setting under `task.root`.
- Samples: `EncoderSample` with `TextSegment`s of a `TokenType`, `tokenize_captions`, and
  `collate_with` (a list of samples -> `VideoTextBatch`).
- Annotation readers of the official files: MSR-VTT (`read_msrvtt_data`, `read_1ka`,
  `read_video_list`, `read_qa`, `answer_vocabulary`; `MSRVTTVideo`, `QAItem`) and YouCook2
  (`read_youcook2`, `read_clip_list`; `YouCook2Video`, `Segment`): each malformed record is one error
  naming the file and record.
- Corpora (`decembert.corpora`): a `CorpusOpener` gets the `DataConfig` (`data.*`) and returns
  `VideoRecord`s (with their `VideoCaptions`), reporting each video it cannot use to the `DataReport` as
  a `BadVideo`; `usable_video(s)` build records from any `CaptionSource` with the cleaning and checks
  HowTo100M's captions get (`plugins/decembert-jsonl-corpus` is an example); a corpus in HowTo100M's
  layout can register an `IndexedCorpus` instead, read through the persistent corpus index.
- Captioners (`decembert.captioners`): a factory returning a `Captioner`, which turns `Frame`s into
  `Region`s (`plugins/decembert-grid-captioner` is an example).
- Models: `load_pretrained(FOLDER_OR_HUB_ID)` returns a `Pretrained` (model, encoder, tokenizer,
  config, task) from a `decembert export` folder (safetensors), a checkpoint or a run;
  `export_model` writes such a folder.
- Errors: raise `DecembertError` with a message naming the file, key or value and how to fix it.
- Tests: `check_task` checks a Task class against the contract on a tiny dataset (`decembert tasks
  --check` runs it on every installed task); `generate_sample_corpus` writes the built-in sample
  corpus (with MSR-VTT-format clips in msrvtt/).
"""

from __future__ import annotations

from decembert_cli.config.schema import (
    Count,
    DataConfig,
    Fraction,
    ModelConfig,
    NonNegative,
    NonNegativeInt,
    Positive,
    Probability,
    Seed,
    Share,
    TaskSettings,
    VideoSettings,
)
from decembert_cli.data.annotations.msrvtt import (
    MSRVTTVideo,
    QAItem,
    answer_vocabulary,
    read_1ka,
    read_msrvtt_data,
    read_qa,
    read_video_list,
)
from decembert_cli.data.annotations.youcook2 import Segment, YouCook2Video, read_clip_list, read_youcook2
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate, collate_with
from decembert_cli.data.corpus_index import IndexedCorpus
from decembert_cli.data.howto100m import BadVideo, CaptionSource, VideoCaptions
from decembert_cli.data.sample.corpus import generate as generate_sample_corpus
from decembert_cli.data.scan import DataReport, VideoRecord, usable_video, usable_videos
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, dataset_file, resolve
from decembert_cli.densecap.backends import Captioner, Frame
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.export import export_model, load_pretrained
from decembert_cli.inference import Pretrained
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
    "BadVideo",
    "CaptionSource",
    "Captioner",
    "CorpusOpener",
    "Count",
    "DataCheck",
    "DataConfig",
    "DataReport",
    "DatasetAdapter",
    "DecembertError",
    "EncoderOutput",
    "EncoderSample",
    "Fraction",
    "Frame",
    "HeadOutput",
    "IndexedCorpus",
    "MSRVTTVideo",
    "ModelConfig",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "PredictionsNotSupported",
    "Pretrained",
    "Probability",
    "QAItem",
    "Region",
    "Seed",
    "Segment",
    "Share",
    "Task",
    "TaskDataset",
    "TaskHead",
    "TaskMetric",
    "TaskSettings",
    "TextSegment",
    "TokenType",
    "VideoCaptions",
    "VideoRecord",
    "VideoSettings",
    "VideoStore",
    "VideoTextBatch",
    "YouCook2Video",
    "answer_vocabulary",
    "check_task",
    "collate",
    "collate_with",
    "dataset_file",
    "export_model",
    "generate_sample_corpus",
    "load_pretrained",
    "read_1ka",
    "read_clip_list",
    "read_msrvtt_data",
    "read_qa",
    "read_video_list",
    "read_youcook2",
    "resolve",
    "tokenize_captions",
    "usable_video",
    "usable_videos",
]
