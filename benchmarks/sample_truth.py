"""What the sample corpus' generator knows, for the scripts that score rules against it.

`vtm_ceiling.py`, `asr_gap_ceiling.py` and `alignment_ceiling.py` draw pre-training's samples exactly as
`decembert pretrain` does (the library's dataset, a run's seed, the demo preset's `data.*`, the held-out
videos) and compare them with the generator's plan: which objects and actions each second of a video shows.
This module holds what they share: the command line, opening the corpus, the plan's truth and the results file
(one entry per setting, earlier invocations' settings kept).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np


def shown(plan: dict, window: tuple[int, int]) -> tuple[set[str], set[str]]:
    """Objects and actions of the segments under the clip's seconds (second t shows the segment at t + 0.5)."""
    objects, actions = set(), set()
    for t in range(*window):
        centi = (t + 0.5) * 100
        for start, end, obj, action in plan["segments"]:
            if start <= centi < end:
                objects.add(obj)
                actions.add(action)
    return objects, actions


def arguments(doc: str, json_name: str, seeds_help: str, runs: bool = False) -> argparse.ArgumentParser:
    """The command line every script shares: --corpus, --dim, --seeds, --set, --json (and --runs: pre-training
    run folders whose final models are validated too)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", type=Path, required=True, help="a sample corpus (e.g. table6_sample.py's WORK/corpus)"
    )
    parser.add_argument("--dim", type=int, default=512, help="its feature width")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help=seeds_help)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set (e.g. data.use_dense)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / json_name)
    if runs:
        parser.add_argument("--runs", type=Path, nargs="*", default=[], help="pre-training run folders to validate")
    return parser


def pretrain_dataset(table: Any, tokenizer: Any, config: Any, videos: np.ndarray, data: Any = None) -> Any:
    """A PretrainDataset of `videos` as `decembert pretrain` builds it from `config` (`data`: its `data` unless
    given)."""
    from decembert_cli.data.corpus import PretrainDataset

    return PretrainDataset(
        table,
        tokenizer,
        data if data is not None else config.data,
        videos=videos,
        seed=config.seed,
        max_video_tokens=config.model.max_video_tokens,
        mlm_on_negatives=config.loss.mlm_on_negatives,
    )


def val_batch_size(config: Any) -> int:
    """The validation batch of one process, as the engine forms it (the swap of the video-use check is within it)."""
    return config.train.batch_size // config.train.accumulation


@dataclass
class Corpus:
    """The sample corpus as one run of `seed` reads it, with the generator's plans."""

    config: Any  # decembert_cli.config.Config
    tokenizer: Any
    words: dict[int, str]  # token id -> object or action word (each is one WordPiece)
    table: Any  # decembert_cli.data.clip_table.ClipTable
    train_videos: np.ndarray
    val_videos: np.ndarray
    plans: dict[str, dict]

    def dataset(self, videos: np.ndarray, data_config: Any = None) -> Any:
        """A PretrainDataset of `videos` as pre-training builds it (`data_config`: the run's `data` unless given)."""
        return pretrain_dataset(self.table, self.tokenizer, self.config, videos, data_config)

    def truth(self, data: Any, info: Any) -> tuple[set[str], set[str]]:
        """The objects and actions the clip of a sample (its SampleInfo) shows."""
        row = int(data.videos[info.video])
        return shown(self.plans[data.video_id(info.video)], self.table.window(row, info.clip))


def open_sample(args: argparse.Namespace, seed: int) -> Corpus:
    from decembert_cli.config import Config, load_config
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import open_corpus
    from decembert_cli.data.sample.corpus import plans
    from decembert_cli.data.sample.vocabulary import ACTIONS, OBJECTS
    from decembert_cli.model import build_tokenizer

    changes = [f"data.root={args.corpus}", f"model.feature_dim_2d={args.dim}", f"model.feature_dim_3d={args.dim}"]
    config = load_config(Config, "demo", [*changes, f"seed={seed}", *args.extra])
    tokenizer = build_tokenizer(config.model)
    words = {int(tokenizer.convert_tokens_to_ids(w)): w for w in (*OBJECTS, *ACTIONS)}
    dims = (config.model.feature_dim_2d, config.model.feature_dim_3d)
    table, _report = open_corpus("sample", config.data, dims, tokenizer, strict=False)
    train_videos, val_videos = split_videos(table, config.data.val_videos)
    return Corpus(config, tokenizer, words, table, train_videos, val_videos, plans(args.corpus))


def save(args: argparse.Namespace, results: dict[str, Any], **extra: Any) -> None:
    """Write `results` under this invocation's setting ("demo" plus its --set), keeping earlier settings."""
    setting = ", ".join(["demo", *args.extra])
    out: dict[str, Any] = {"platform": platform.platform(), **extra, "settings": {}}
    if args.json.exists():
        out["settings"] = json.loads(args.json.read_text()).get("settings", {})
    corpus = json.loads((args.corpus / "meta.json").read_text())["arguments"]
    out["settings"][setting] = {"corpus": corpus, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


def run_validator(run_dir: Path) -> Callable[..., dict[str, float]]:
    """validate(interleaved=True, **data_changes): a pre-training run's final model validated as `decembert pretrain`
    does (its config, seed, held-out clips; `engine.loop.evaluate`), the validation items in clip order when
    not `interleaved` (the order before 2026-12-06), `data_changes` applied to the run's `data` config."""
    import torch

    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import VAL_EPOCH, validation_indices
    from decembert_cli.engine.distributed import DistInfo
    from decembert_cli.engine.loop import evaluate
    from decembert_cli.export import load_pretrained
    from decembert_cli.viz.attention import run_corpus

    model = load_pretrained(run_dir)
    config = model.config
    table = run_corpus(config, {"corpus": "sample"}, model.tokenizer)
    _train, val_videos = split_videos(table, config.data.val_videos)

    def validate(interleaved: bool = True, **data_changes: Any) -> dict[str, float]:
        data = pretrain_dataset(table, model.tokenizer, config, val_videos, replace(config.data, **data_changes))
        offsets = data.clip_offsets if interleaved else None
        keys = [(VAL_EPOCH, i) for i in validation_indices(len(data), config.data.val_samples, offsets)]
        return evaluate(
            model.model,
            data,
            keys,
            data.collate,
            batch_size=val_batch_size(config),
            device=torch.device("cpu"),
            dtype=None,
            dist_info=DistInfo(rank=0, world=1, local_rank=0),
            forward_kwargs={"constrained": True},
        )

    return validate
