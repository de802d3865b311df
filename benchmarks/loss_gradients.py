"""How much of the encoder's gradient each pre-training loss gives: MLM against VTM.

VTM on the sample corpus learns on its own (the `VTM alone` variant of video_use.py) but hardly beside MLM.
This script measures why: for a run's checkpoint (or the same model freshly initialised, `--fresh`), on
training batches, the gradient norm of each loss alone (unweighted) per parameter group (the video MLP, the
BERT layers, the embeddings), and reports the median ratio MLM / VTM over the batches. Under AdamW a loss
with a gradient several times smaller moves the shared weights correspondingly less.

    python benchmarks/loss_gradients.py RUN_OR_CHECKPOINT [--fresh] [--batches 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

GROUPS = {
    "video MLP": "encoder.video.",
    "BERT layers": "encoder.bert.encoder.",
    "embeddings": "encoder.bert.embeddings.",
}


def gradient_ratios(source: Path, fresh: bool, batches: int, batch_size: int = 16) -> dict[str, Any]:
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import PretrainDataset
    from decembert_cli.export import load_pretrained
    from decembert_cli.model import build_pretraining_model
    from decembert_cli.viz.attention import run_corpus

    torch.manual_seed(0)
    loaded = load_pretrained(source)
    config, tokenizer, model = loaded.config, loaded.tokenizer, loaded.model
    if fresh:  # the run's settings, the weights a new run starts from (the packaged text model)
        model = build_pretraining_model(
            dataclasses.replace(config, model=dataclasses.replace(config.model, init="auto"))
        )
    model.train()
    table = run_corpus(config, {"corpus": "sample"}, tokenizer)
    train_videos, _ = split_videos(table, config.data.val_videos)
    data = PretrainDataset(
        table, tokenizer, config.data, videos=train_videos, seed=0, max_video_tokens=config.model.max_video_tokens
    )
    ratios: dict[str, list[float]] = {g: [] for g in GROUPS}
    for b in range(batches):
        batch = data.collate([data[i] for i in range(b * batch_size, (b + 1) * batch_size)])
        out = model(batch)
        norms: dict[str, dict[str, float]] = {}
        for name in ("mlm", "vtm"):
            model.zero_grad()
            out.losses[name].backward(retain_graph=True)
            norms[name] = {
                group: float(
                    sum(
                        p.grad.pow(2).sum()
                        for n, p in model.named_parameters()
                        if n.startswith(pre) and p.grad is not None
                    )
                )
                ** 0.5
                for group, pre in GROUPS.items()
            }
        for group in GROUPS:
            ratios[group].append(norms["mlm"][group] / max(norms["vtm"][group], 1e-12))
    return {"batches": batches, "mlm_over_vtm": {g: float(np.median(r)) for g, r in ratios.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a pre-training run folder or checkpoint file")
    parser.add_argument("--fresh", action="store_true", help="the run's settings with freshly initialised weights")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "loss_gradients.json")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    key = f"{args.source.parent.parent.name}/{args.source.name}" if args.source.is_file() else args.source.name
    key += " (fresh weights)" if args.fresh else ""
    out["runs"][key] = gradient_ratios(args.source, args.fresh, args.batches)
    print(key, json.dumps(out["runs"][key]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
