"""Pre-training: a corpus plugin's videos -> held-out split -> datasets -> the shared training loop."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from decembert_cli.config import Config, save_config, to_dict
from decembert_cli.data.clip_table import ClipTable, split_videos
from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, open_corpus, validation_indices
from decembert_cli.data.scan import DataReport
from decembert_cli.engine.distributed import teardown
from decembert_cli.engine.loop import (
    Job,
    TrainResult,
    check_compile_backend,
    check_run_dir,
    run_folder_lock,
    train,
)
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_text, read_jsonl
from decembert_cli.model import build_pretraining_model, build_tokenizer, check_vocabulary
from decembert_cli.model.flops import ModelShape, batch_flops
from decembert_cli.model.pretraining import collapse_warning

SKIP_LOG = "skipped_videos.jsonl"  # videos found bad while drawing samples (PretrainDataset)


@dataclass
class PretrainSetup:
    job: Job
    report: DataReport
    train_videos: int
    val_videos: int
    train_clips: int
    val_clips: int
    train_items: int  # items per epoch: one per config.train.epoch_unit
    table: ClipTable  # the corpus' clips
    tokenizer: Any
    shown_video: int  # the video whose attention validation pictures show: the first held-out one (else training)


def prepare(
    config: Config,
    corpus: str,
    run_dir: Path,
    *,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PretrainSetup:
    """Build the model, tokenizer, datasets and the training job (nothing is trained yet)."""
    dims = (config.model.feature_dim_2d, config.model.feature_dim_3d)
    tokenizer = build_tokenizer(config.model)
    table, report = open_corpus(corpus, config.data, dims, tokenizer, strict=strict, progress=progress)
    train_videos, val_videos = split_videos(table, config.data.val_videos)
    torch.manual_seed(config.seed)
    model = build_pretraining_model(config)
    check_vocabulary(tokenizer, model.encoder)
    common: dict[str, Any] = dict(
        seed=config.seed,
        max_video_tokens=config.model.max_video_tokens,
        mlm_on_negatives=config.loss.mlm_on_negatives,
        strict=strict,
        skip_log=run_dir / SKIP_LOG,
    )
    train_data = PretrainDataset(
        table, tokenizer, config.data, videos=train_videos, epoch_unit=config.train.epoch_unit, **common
    )
    val_data = PretrainDataset(table, tokenizer, config.data, videos=val_videos, **common) if len(val_videos) else None
    val_keys = (
        [(VAL_EPOCH, i) for i in validation_indices(len(val_data), config.data.val_samples, val_data.clip_offsets)]
        if val_data
        else []
    )
    if len(train_data) == 0:
        raise DecembertError(f"corpus '{corpus}' has no training clips")
    job = Job(
        model=model,
        train_data=train_data,
        collate=train_data.collate,
        config=config.train,
        seed=config.seed,
        run_dir=run_dir,
        saved_config=to_dict(config),
        meta={"kind": "pretrain", "corpus": corpus, "bert_config": model.encoder.bert.config.to_dict()},
        val_data=val_data,
        val_keys=val_keys,
        workers=config.data.workers,
        eval_kwargs={"constrained": True},  # u and the entropy are reported even when lambda = 0
        diagnose=collapse_warning,
        lengths=train_data.item_lengths,
        cost=partial(
            batch_flops,
            ModelShape.of(model.encoder.bert.config, config.model.feature_dim_2d, config.model.feature_dim_3d),
            constrained=config.loss.constrained_lambda > 0,
            vtm_pass=config.loss.vtm_input == "unmasked",
        ),
    )
    return PretrainSetup(
        job=job,
        report=report,
        train_videos=len(train_videos),
        val_videos=len(val_videos),
        train_clips=train_data.n_clips,
        val_clips=len(val_keys),
        train_items=len(train_data),
        table=table,
        tokenizer=tokenizer,
        shown_video=int(val_videos[0] if len(val_videos) else train_videos[0]),
    )


def pretrain(setup: PretrainSetup, config: Config, *, resume: bool = False, **kwargs: Any) -> TrainResult:
    """Train; a fresh run first saves its resolved config and data report in the run folder."""
    run_dir = setup.job.run_dir
    check_compile_backend(config.train)
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        with run_folder_lock(run_dir, main):
            if not resume and main:
                check_run_dir(run_dir, resume=False, new=True)  # refuse before writing anything into an existing run
                save_config(config, run_dir / "config.yaml")
                atomic_write_text(run_dir / "data_report.json", json.dumps(setup.report.as_dict(), indent=2) + "\n")
            result = train(setup.job, resume=resume, **kwargs)
            if main:
                record_skips(run_dir)
            return result
    finally:
        teardown()


def record_skips(run_dir: Path) -> dict[str, int]:
    """Add the videos found bad while training (SKIP_LOG, each counted once) to data_report.json."""
    log, report_path = run_dir / SKIP_LOG, run_dir / "data_report.json"
    if not log.is_file() or not report_path.is_file():
        return {}
    rows, _ = read_jsonl(log)
    first = {row["video_id"]: row for row in reversed(rows)}  # each video once (every process notes it)
    counts = Counter(f"{row['kind']} (found while training)" for row in first.values())
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["skipped_while_training"] = dict(counts)
    report["examples_while_training"] = {
        f"{r['kind']} (found while training)": f"{r['video_id']}: {r['reason']}" for r in first.values()
    }
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    return dict(counts)
