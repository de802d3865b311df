"""Padding share of pre-training batches, plain vs length-aware batching (train.bucket_batches).

Padding share = 1 - real tokens / positions the encoder computes (each batch padded to its longest
video and its longest text, as `collate` does). Two corpora:

- the sample corpus, through the real dataset and collate (every sample built);
- a HowTo100M-like length distribution (lengths only, the same sampler): clip durations log-normal with
  HowTo100M's mean of 3.6 s per clip (134,472 h over ~136M clips), ASR captions log-normal with a mean of
  11 WordPiece tokens (an assumption), k = 1 neighbour on each side, dense captions at 2 per frame every
  2 s (at most 16) of 8 tokens each (an assumption).

    python benchmarks/padding.py --json benchmarks/results/padding_cpu2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from decembert_cli.engine.sampler import StepBatches


def batches_of(size: int, lengths: np.ndarray, window: int, batch: int, steps: int) -> list[list[int]]:
    sampler = StepBatches(
        size,
        global_batch=batch,
        world=1,
        rank=0,
        accumulation=1,
        seed=0,
        start_step=0,
        total_steps=steps,
        lengths=lengths,
        window=window,
    )
    return [[i for _, i in b] for b in sampler]


def share(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Padding share of batches given as (video lengths, text lengths) per batch."""
    real = sum(int(v.sum() + t.sum()) for v, t in parts)
    computed = sum(len(v) * int(v.max() + t.max()) for v, t in parts)
    return 1 - real / computed


def sample_corpus(windows: list[int], batch: int, steps: int, videos: int) -> dict:
    from decembert_cli.config import Config, load_config
    from decembert_cli.data.clip_table import ClipTable
    from decembert_cli.data.corpus import PretrainDataset
    from decembert_cli.data.sample.corpus import generate, sample
    from decembert_cli.data.scan import DataReport
    from decembert_cli.model import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "sample", videos=videos, feature_dim_2d=16, feature_dim_3d=16)
        cfg = load_config(Config, None, [f"data.root={root}", "model.feature_dim_2d=16", "model.feature_dim_3d=16"])
        tokenizer = build_tokenizer(cfg.model)
        table = ClipTable.from_records(sample(cfg.data, DataReport(), (16, 16)), tokenizer)
        data = PretrainDataset(table, tokenizer, cfg.data, seed=0)
        lengths = data.item_lengths()
        out: dict = {"videos": videos, "clips": len(data), "mean_estimated_length": float(lengths.mean())}
        for window in windows:
            parts = []
            for keys in batches_of(len(data), lengths, window, batch, steps):
                b = data.collate([data[(0, i)] for i in keys])
                parts.append((b.video_mask.sum(1).numpy(), b.text_mask.sum(1).numpy()))
            out[f"window_{window}"] = share(parts)
    return out


def howto100m_like(windows: list[int], batch: int, steps: int, clips: int) -> dict:
    rng = np.random.default_rng(0)
    duration = rng.lognormal(np.log(3.6) - 0.18, 0.6, clips)  # mean 3.6 s
    video = np.clip(np.ceil(duration) + 1, 1, 100).astype(np.int64)  # seconds under the caption (floor .. ceil)
    caption = np.minimum(rng.lognormal(np.log(11) - 0.125, 0.5, clips).round().astype(np.int64) + 1, 40)
    asr = 1 + caption + np.roll(caption, 1) + np.roll(caption, -1) + 3  # [CLS], s_i-1, s_i, s_i+1 and [SEP]s
    dense = np.minimum(np.ceil(video / 2) * 2, 16).astype(np.int64) * 9
    text = asr + dense
    lengths = np.minimum(video + text, 65535).astype(np.uint16)
    out: dict = {"clips": clips, "mean_length": float(lengths.mean()), "p95_length": float(np.percentile(lengths, 95))}
    for window in windows:
        parts = [(video[k], text[k]) for k in batches_of(clips, lengths, window, batch, steps)]
        out[f"window_{window}"] = share(parts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 16, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150, help="batches per setting on the sample corpus")
    parser.add_argument("--videos", type=int, default=320)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.time()
    result = {
        "machine": {"cpu_threads": os.cpu_count(), "platform": platform.platform()},
        "batch_size": args.batch_size,
        "sample": sample_corpus(args.windows, args.batch_size, args.steps, args.videos),
        "howto100m_like": howto100m_like(args.windows, args.batch_size, 2000, 1_000_000),
    }
    result["seconds"] = round(time.time() - start, 1)
    for name in ("sample", "howto100m_like"):
        shares = ", ".join(f"window {w}: {100 * result[name][f'window_{w}']:.1f}%" for w in args.windows)
        print(f"{name}: padding share {shares}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
