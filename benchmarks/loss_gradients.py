"""How much of the encoder's gradient each pre-training loss gives: MLM and the constrained loss against VTM.

VTM on the sample corpus learns on its own (the `VTM alone` variant of video_use.py) but hardly beside MLM,
and later still beside the constrained loss. This script measures why: for a run's checkpoint (or the same
model freshly initialised, `--fresh`), on training batches, the gradient of each loss alone (unweighted)
per parameter group (the video MLP, the BERT layers, the embeddings), and reports over the batches the
median ratio of gradient norms MLM / VTM and constrained / VTM, and the median cosine between the
constrained loss's gradient and VTM's (negative: the constrained loss pushes the shared weights against
VTM). Under AdamW a loss with a gradient several times smaller moves the shared weights correspondingly
less. The constrained loss is computed in the run's own form, or in another (`--form probs-both`, the
released code's), from the same weights; also for a run trained without it (lambda 0).

    python benchmarks/loss_gradients.py RUN_OR_CHECKPOINT [--fresh] [--batches 6] [--form logits-v2t]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

GROUPS = {  # parameter-name patterns (regular expressions, searched)
    "video MLP": r"^encoder\.video\.",
    "BERT layers": r"^encoder\.bert\.encoder\.",
    "embeddings": r"^encoder\.bert\.embeddings\.",
    # a subset of the BERT layers, where the constrained loss acts directly: the scores Q K^T of every layer
    "attention Q, K": r"^encoder\.bert\.encoder\.layer\.\d+\.attention\.self\.(query|key)\.",
}


FORMS = {"logits-v2t": ("logits", "v2t"), "probs-both": ("probs", "both")}  # loss.constrained_scores, _direction


def _cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    dot = sum(float((a[n] * b[n]).sum()) for n in a if n in b)
    norm_a = sum(float(g.pow(2).sum()) for g in a.values()) ** 0.5
    norm_b = sum(float(g.pow(2).sum()) for g in b.values()) ** 0.5
    return dot / max(norm_a * norm_b, 1e-24)


def gradient_ratios(
    source: Path, fresh: bool, batches: int, batch_size: int = 16, form: str | None = None
) -> dict[str, Any]:
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
    if form is not None:
        model.constrained_scores, model.constrained_direction = FORMS[form]
    table = run_corpus(config, {"corpus": "sample"}, tokenizer)
    train_videos, _ = split_videos(table, config.data.val_videos)
    data = PretrainDataset(
        table, tokenizer, config.data, videos=train_videos, seed=0, max_video_tokens=config.model.max_video_tokens
    )
    ratios: dict[str, list[float]] = {g: [] for g in GROUPS}
    constrained: dict[str, list[float]] = {g: [] for g in GROUPS}
    cosines: dict[str, list[float]] = {g: [] for g in GROUPS}
    entropies: list[float] = []
    for b in range(batches):
        batch = data.collate([data[i] for i in range(b * batch_size, (b + 1) * batch_size)])
        out = model(batch, constrained=True)
        if "constrained" not in out.losses:
            raise SystemExit(
                f"{source}: its batches have no candidate captions, so there is no constrained loss to measure"
            )
        grads: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        for name in ("mlm", "vtm", "constrained"):
            model.zero_grad()
            out.losses[name].backward(retain_graph=True)
            grads[name] = {
                group: {
                    n: p.grad.detach().clone()
                    for n, p in model.named_parameters()
                    if re.search(pattern, n) and p.grad is not None
                }
                for group, pattern in GROUPS.items()
            }
        entropies.append(float(out.losses["constrained"].detach()))
        norms = {
            name: {group: sum(float(g.pow(2).sum()) for g in grads[name][group].values()) ** 0.5 for group in GROUPS}
            for name in grads
        }
        for group in GROUPS:
            ratios[group].append(norms["mlm"][group] / max(norms["vtm"][group], 1e-12))
            constrained[group].append(norms["constrained"][group] / max(norms["vtm"][group], 1e-12))
            cosines[group].append(_cosine(grads["constrained"][group], grads["vtm"][group]))
    return {
        "batches": batches,
        "form": form or f"{model.constrained_scores}-{model.constrained_direction}",
        "entropy": float(np.mean(entropies)),
        "mlm_over_vtm": {g: float(np.median(r)) for g, r in ratios.items()},
        "constrained_over_vtm": {g: float(np.median(r)) for g, r in constrained.items()},
        "cosine_constrained_vtm": {g: float(np.median(r)) for g, r in cosines.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a pre-training run folder or checkpoint file")
    parser.add_argument("--fresh", action="store_true", help="the run's settings with freshly initialised weights")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--form", choices=FORMS, help="the constrained loss's form (default: the run's own)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "loss_gradients.json")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    key = f"{args.source.parent.parent.name}/{args.source.name}" if args.source.is_file() else args.source.name
    key += " (fresh weights)" if args.fresh else ""
    key += f" [{args.form}]" if args.form else ""
    out["runs"][key] = gradient_ratios(args.source, args.fresh, args.batches, form=args.form)
    print(key, json.dumps(out["runs"][key]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
