"""Do a pre-trained model's pooled vectors carry the video-text match? A linear probe on frozen features.

VTM on the sample corpus can stay at chance. Is the head too slow to find a match the encoder already
represents, or does the encoder not represent it? This script embeds VTM pairs with a finished pre-training
run's encoder (frozen; the text unmasked, as `loss.vtm_input: unmasked` reads it) and fits a logistic
regression (L-BFGS, features standardised, an L2 penalty per `--l2`) on training videos' pairs, then scores
the held-out pairs that validation draws. It reports the run's own VTM head on the same held-out pairs
beside it. A probe far above the head says the head (or its optimisation) is the limit; a probe at the head's
level says the encoder is.

    python benchmarks/vtm_linear_probe.py RUN_DIR [RUN_DIR ...] --json results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def embed(
    pretraining: Any, data: Any, epoch: int, indices: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled vectors, the run's VTM logits, labels) of the pairs `indices` of `data` at `epoch`."""
    pooled, logits, labels = [], [], []
    for first in range(0, len(indices), 32):
        batch = data.collate([data.build(epoch, i)[0] for i in indices[first : first + 32]])
        vectors = pretraining.encoder(batch).pooled  # nothing masked: what VTM reads with either loss.vtm_input
        pooled.append(vectors)
        logits.append(pretraining.vtm(vectors))
        labels.append(batch.vtm_labels.float())
    return torch.cat(pooled), torch.cat(logits), torch.cat(labels)


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logistic regression on standardised `x`; returns the logit function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda v: ((v - mean) / std) @ w.detach() + b.detach()


def probe_run(run_dir: Path, train_pairs: int, l2s: list[float]) -> dict[str, Any]:
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, validation_indices
    from decembert_cli.export import load_pretrained
    from decembert_cli.viz.attention import run_corpus

    loaded = load_pretrained(run_dir)
    config, tokenizer, pretraining = loaded.config, loaded.tokenizer, loaded.model.eval()
    table = run_corpus(config, {"corpus": "sample"}, tokenizer)
    train_videos, val_videos = split_videos(table, config.data.val_videos)
    shown = dataclasses.replace(config.data, mask_prob=0.0)

    def dataset(videos: np.ndarray) -> PretrainDataset:
        return PretrainDataset(
            table, tokenizer, shown, videos=videos, seed=config.seed, max_video_tokens=config.model.max_video_tokens
        )

    train, val = dataset(train_videos), dataset(val_videos)
    chosen = np.random.default_rng(0).choice(len(train), size=min(len(train), train_pairs), replace=False)
    x, _logits, y = embed(pretraining, train, 0, sorted(chosen.tolist()))
    vx, vlogits, vy = embed(pretraining, val, VAL_EPOCH, validation_indices(len(val), config.data.val_samples))

    def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
        return 100.0 * float(((logits > 0).float() == labels).float().mean())

    found: dict[str, Any] = {"train_pairs": len(y), "val_pairs": len(vy), "head_val": accuracy(vlogits, vy)}
    for l2 in l2s:
        logit = fit_probe(x, y, l2)
        found[f"probe l2={l2:g}"] = {"train": accuracy(logit(x), y), "val": accuracy(logit(vx), vy)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished pre-training run folders")
    parser.add_argument("--train-pairs", type=int, default=1600, help="training pairs the probe learns from")
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "vtm_linear_probe.json")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    for run_dir in args.runs:
        out["runs"][run_dir.name] = probe_run(run_dir, args.train_pairs, args.l2)
        print(run_dir.name, json.dumps(out["runs"][run_dir.name]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
