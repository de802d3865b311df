"""Throughput of the whole pre-training pipeline on the sample corpus, data loading included.

For each number of data-loading workers, runs `train.max_steps` optimiser steps of `decembert
pretrain --data sample` (in a fresh subprocess, so runs do not share caches or threads) and reports
samples/s and the share of step time spent waiting for data. The baseline is the first setting
(workers=0: loading in the training process); other settings are reported as ratios to it.

    python benchmarks/pretrain_throughput.py --arch small --batch-size 32 --steps 20 --workers 0 1 2
    python benchmarks/pretrain_throughput.py --device cuda --arch base --init none --batch-size 128 --workers 0 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _one(args: argparse.Namespace, workers: int, corpus: Path, out: Path) -> dict:
    """One `decembert pretrain` run; its last metrics-log line holds samples/s and the data-wait share."""
    sets = [
        f"data.root={corpus}",
        f"model.arch={args.arch}",
        f"model.init={args.init}",
        f"model.tokenizer={args.tokenizer}",
        f"model.feature_dim_2d={args.feature_dim}",
        f"model.feature_dim_3d={args.feature_dim}",
        f"data.workers={workers}",
        f"data.neighbours={args.neighbours}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        f"train.log_every={args.steps}",
        "train.validate_every=0",
        "train.checkpoint_every=0",
        f"train.device={args.device}",
        f"train.precision={args.precision}",
    ]
    cmd = [sys.executable, "-m", "decembert_cli", "pretrain", "--data", "sample", "--out", str(out)]
    cmd += [x for s in sets for x in ("--set", s)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"workers={workers} failed:\n{done.stderr[-3000:]}")
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"split"' not in x][-1]
    return {"workers": workers, "samples_per_s": last["samples_per_s"], "data_wait": last["data_wait"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small", choices=["base", "small", "tiny"])
    parser.add_argument("--init", default="auto")
    parser.add_argument("--tokenizer", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--neighbours", type=int, default=1)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--videos", type=int, default=160)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--corpus", type=Path, default=None, help="an existing sample corpus (else one is generated)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None:
            from decembert_cli.data.sample.corpus import generate

            corpus = generate(
                Path(tmp) / "sample",
                videos=args.videos,
                feature_dim_2d=args.feature_dim,
                feature_dim_3d=args.feature_dim,
            )
        rows = [_one(args, w, corpus, Path(tmp) / f"run-w{w}") for w in args.workers]
    base = rows[0]["samples_per_s"]
    print(
        f"pre-training throughput: arch {args.arch}, batch {args.batch_size}, {args.steps} steps, device {args.device}"
    )
    print(f"{'workers':>8} {'samples/s':>10} {'vs first':>9} {'waiting for data':>17}")
    for r in rows:
        r["ratio"] = r["samples_per_s"] / base
        print(f"{r['workers']:>8} {r['samples_per_s']:>10.1f} {r['ratio']:>8.2f}x {100 * r['data_wait']:>16.1f}%")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
