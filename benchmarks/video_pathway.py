"""The video pathway on the sample corpus: can the model learn targets that only the video tells?

The oracle-target run of issue 26 with the library's own dataset, collate, model and MLM loss: the
`small` encoder (MiniLM-L6) is trained on positive clips of the sample corpus whose only MLM target is
the object named by the caption that truly matches the clip, masked at every mention in the sample's
text (ASR candidates and dense captions), so that only the video can tell it. Then, on the held-out
videos, accuracy with the clip's own video features and with those of a clip showing another object.
`--block` repeats it with the video blocked (masked out of attention, detached from the gradient, or
shuffled across the batch in training) to show what the gap measures. The fast version is
tests/integration/test_video_pathway.py.

    python benchmarks/video_pathway.py --corpus /tmp/video-use/corpus --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from video_use import object_scores, oracle_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a sample corpus (decembert sample-data)")
    parser.add_argument("--dim", type=int, default=512, help="its feature width")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", nargs="+", default=["none", "masked", "shuffled"])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "video_pathway_cpu2.json")
    args = parser.parse_args()
    from decembert_cli.config import Config, load_config
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, open_corpus, validation_indices
    from decembert_cli.model import build_pretraining_model, build_tokenizer

    overrides = [
        f"data.root={args.corpus}",
        f"model.feature_dim_2d={args.dim}",
        f"model.feature_dim_3d={args.dim}",
        "data.negative_prob=0",
        "data.mask_prob=0",
        "loss.constrained_lambda=0",
        f"seed={args.seed}",
    ]
    config = load_config(Config, "demo", overrides)
    tokenizer = build_tokenizer(config.model)
    table, _ = open_corpus("sample", config.data, (args.dim, args.dim), tokenizer, strict=True)
    train_videos, val_videos = split_videos(table, config.data.val_videos)
    kwargs = dict(seed=args.seed, max_video_tokens=config.model.max_video_tokens)
    train = PretrainDataset(table, tokenizer, config.data, videos=train_videos, **kwargs)
    val = PretrainDataset(table, tokenizer, config.data, videos=val_videos, **kwargs)
    pool = [s for s in (oracle_target(train.build(0, i)[0], tokenizer) for i in range(len(train))) if s is not None]
    tests = [oracle_target(val.build(VAL_EPOCH, i)[0], tokenizer) for i in validation_indices(len(val), 2000)]
    probes = [s[0] for s in tests if s is not None]
    results = {}
    for block in args.block:
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        model = build_pretraining_model(config)
        if block == "detached":
            forward = model.encoder.video.forward
            model.encoder.video.forward = lambda v2, v3, f=forward: f(v2, v3).detach()
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.lr, betas=config.train.betas)
        model.train()
        started = time.perf_counter()
        for _ in range(args.steps):
            batch = train.collate([pool[i][0] for i in rng.choice(len(pool), config.train.batch_size)])
            if block == "masked":
                batch = dataclasses.replace(batch, video_mask=torch.zeros_like(batch.video_mask))
            elif block == "shuffled":
                order = torch.from_numpy(rng.permutation(batch.batch_size))
                batch = dataclasses.replace(
                    batch,
                    video_2d=batch.video_2d[order],
                    video_3d=batch.video_3d[order],
                    video_mask=batch.video_mask[order],
                )
            loss = model(batch).losses["total"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        scores = (
            object_scores_masked(model, val, probes) if block == "masked" else object_scores(model, val.collate, probes)
        )
        results[block] = {
            "own": 100 * float(np.mean(scores["own"])),
            "swapped": 100 * float(np.mean(scores["swapped"])),
            "train_s": round(time.perf_counter() - started, 1),
        }
        print(block, results[block], flush=True)
    out = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "config": "demo (small, MiniLM-L6 init, batch 16, lr 1e-4), oracle MLM targets only",
        "steps": args.steps,
        "seed": args.seed,
        "train_samples": len(pool),
        "test_samples": len(probes),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


def object_scores_masked(model: torch.nn.Module, val: object, probes: list) -> dict[str, list[float]]:
    """object_scores with the video masked out of attention, as it was in training."""

    def collate(chunk: list) -> object:
        batch = val.collate(chunk)  # type: ignore[attr-defined]
        return dataclasses.replace(batch, video_mask=torch.zeros_like(batch.video_mask))

    return object_scores(model, collate, probes)


if __name__ == "__main__":
    main()
