"""Does the pre-trained model read the video? Pre-training variants on the sample corpus, then probes.

Each variant (a list of `--set`s, e.g. the masking unit) is pre-trained with `--config demo` on the
sample corpus for the same steps and seeds (runs in --work, resumable), then probed on the held-out
videos:

- objects only the video shows: for every held-out positive clip whose truly matching caption names
  an object, that object's word is masked at EVERY mention in the sample's text (ASR candidates and
  dense captions), so no text gives it away, and predicted at the matching caption. Accuracy with
  the clip's own video features and with those of another clip of the batch whose object differs
  (`swapped`): the gap is what the model reads from the video. Split by whether the dense captioner
  can name the object (the sample corpus' captioner knows half of them; for the rest only the 2D
  stream shows it). The same probe for every variant, whatever masking it was trained with.
- attention to the video: per layer, the attention mass that real text tokens put on real video
  tokens (mean over heads and tokens), and the part of it on video token 0 (the position shared with
  [CLS]), on the same clips with nothing masked.
- does VTM read the video: the share of held-out matching pairs VTM calls matching with their own video
  and with another video's features (text and dense captions kept; a text-only judge answers alike).
  A run trained with video negatives (`data.negatives: video | both`) is also scored on the held-out pairs
  drawn with ASR negatives, the paper's VTM (`vtm_acc_asr_negatives`).
- from the run's own last validation: MLM accuracy on ASR / dense tokens, VTM accuracy, MLM accuracy
  on the ASR of matching pairs with own / swapped video (with the run's own masking), alignment.

    python benchmarks/video_use.py --work /tmp/video-use --variants token concept --seeds 0 1 --steps 400
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from table6_sample import PRETRAIN_METRICS, last_validation, run, sets, summary
from vtm_linear_probe import embed

VARIANTS = {
    "token": ["data.mask_unit=token"],
    "word": ["data.mask_unit=word"],
    "concept": ["data.mask_unit=concept"],
    "token, no MLM on negatives": ["data.mask_unit=token", "loss.mlm_on_negatives=false"],
    "concept, no MLM on negatives": ["data.mask_unit=concept", "loss.mlm_on_negatives=false"],
    "concept, video negatives": ["data.mask_unit=concept", "data.negatives=both"],
    "concept, separate video positions": ["data.mask_unit=concept", "model.video_positions=separate"],
    "token, separate video positions": ["data.mask_unit=token", "model.video_positions=separate"],
    "concept, no gradient clipping": ["data.mask_unit=concept", "train.clip_grad=0"],
    "concept, VTM unmasked": ["data.mask_unit=concept", "loss.vtm_input=unmasked"],
    "concept, other-video negatives": ["data.mask_unit=concept", "data.same_video_negatives=0"],
    # VTM without MLM (nothing masked) and without the constrained loss: what VTM learns on its own
    "VTM alone": ["data.mask_prob=0", "loss.constrained_lambda=0"],
    "concept, VTM unmasked, other-video negatives": [
        "data.mask_unit=concept",
        "loss.vtm_input=unmasked",
        "data.same_video_negatives=0",
    ],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def _swap_partner(targets: list[int]) -> list[int]:
    """For each sample, the next one in the batch (cyclically) whose target differs (itself if none)."""
    out = []
    for i, t in enumerate(targets):
        j = next((k % len(targets) for k in range(i + 1, i + len(targets)) if targets[k % len(targets)] != t), i)
        out.append(j)
    return out


@torch.no_grad()
def vtm_video_scores(
    pretraining: Any, collate: Any, positives: list[Any], videos: list[int], batch_size: int = 32
) -> dict[str, float]:
    """Does VTM read the video? The share of matching pairs (`positives`) VTM calls matching with their own video
    and with the video features of the next sample of the batch from another video (text and dense captions
    kept): a model that judges from the text alone answers the same for both."""
    said: dict[str, list[bool]] = {"own": [], "swapped": []}
    training = pretraining.training
    pretraining.eval()
    for first in range(0, len(positives), batch_size):
        batch = collate(positives[first : first + batch_size])
        partner = torch.tensor(_swap_partner(videos[first : first + batch_size]))
        swapped = dataclasses.replace(
            batch,
            video_2d=batch.video_2d[partner],
            video_3d=batch.video_3d[partner],
            video_mask=batch.video_mask[partner],
        )
        for name, b in (("own", batch), ("swapped", swapped)):
            # nothing is masked in `positives`, so one pass is what VTM reads with either loss.vtm_input
            said[name] += (pretraining.vtm(pretraining.encoder(b).pooled) > 0).tolist()
    pretraining.train(training)
    return {f"vtm_positive_{name}_video": 100.0 * float(np.mean(x)) for name, x in said.items()}


@torch.no_grad()
def object_scores(pretraining: Any, collate: Any, probes: list[Any], batch_size: int = 32) -> dict[str, list[float]]:
    """Per probe sample (`oracle_target`): the share of its masked object mentions predicted right, with its own
    video ("own") and with the video of the next sample of its batch that shows another object ("swapped")."""
    from decembert_cli.data.batch import IGNORE_INDEX

    correct: dict[str, list[float]] = {"own": [], "swapped": []}
    training = pretraining.training
    pretraining.eval()
    for first in range(0, len(probes), batch_size):
        chunk = probes[first : first + batch_size]
        batch = collate(chunk)
        assert batch.mlm_labels is not None
        selected = batch.mlm_labels != IGNORE_INDEX
        rows = selected.nonzero()[:, 0]
        targets = batch.mlm_labels[selected]
        per_sample = [int(batch.mlm_labels[i][selected[i]][0]) for i in range(len(chunk))]
        partner = torch.tensor(_swap_partner(per_sample))
        for name, b in (
            ("own", batch),
            (
                "swapped",
                dataclasses.replace(
                    batch,
                    video_2d=batch.video_2d[partner],
                    video_3d=batch.video_3d[partner],
                    video_mask=batch.video_mask[partner],
                ),
            ),
        ):
            enc = pretraining.encoder(b)
            hit = pretraining.mlm(enc.text[selected]).argmax(-1) == targets
            # one score per sample: its object's mentions in the matching caption (usually one)
            score = torch.zeros(len(chunk)).index_add_(0, rows, hit.float()) / torch.bincount(
                rows, minlength=len(chunk)
            ).clamp(min=1)
            correct[name] += score.tolist()

    pretraining.train(training)
    return correct


@torch.no_grad()
def probe(run_dir: Path, batch_size: int = 32) -> dict[str, Any]:
    """The object-word probe and attention-to-video statistics of one pre-training run (see the module doc)."""
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, validation_indices
    from decembert_cli.export import load_pretrained
    from decembert_cli.viz.attention import run_corpus

    model = load_pretrained(run_dir)
    config, tokenizer = model.config, model.tokenizer
    table = run_corpus(config, {"corpus": "sample"}, tokenizer)
    _, val = split_videos(table, config.data.val_videos)
    shown = dataclasses.replace(config.data, negative_prob=0.0, mask_prob=0.0)
    data = PretrainDataset(
        table, tokenizer, shown, videos=val, seed=config.seed, max_video_tokens=config.model.max_video_tokens
    )
    probes, plain, named, videos = [], [], [], []
    for index in validation_indices(len(data), config.data.val_samples):
        sample, info = data.build(VAL_EPOCH, index)
        plain.append(sample)
        videos.append(info.video)
        made = oracle_target(sample, tokenizer)
        if made is not None:
            probes.append(made[0])
            named.append(made[1])

    pretraining = model.model
    correct = object_scores(pretraining, data.collate, probes, batch_size)
    vtm_reads = vtm_video_scores(pretraining, data.collate, plain, videos, batch_size)
    video_share: list[list[float]] = []
    token0_share: list[list[float]] = []
    for first in range(0, len(plain), batch_size):
        batch = data.collate(plain[first : first + batch_size])
        enc = pretraining.encoder(batch, output_attentions=True)
        v = batch.video_mask.shape[1]
        queries = batch.text_mask.float()  # (B, Lt)
        weight = queries.sum()
        video_share.append([])
        token0_share.append([])
        for att in enc.attentions:  # (B, heads, L, L)
            text_rows = att[:, :, v:, :].float().mean(1)  # (B, Lt, L)
            on_video = (text_rows[:, :, :v] * batch.video_mask[:, None, :]).sum(-1)  # (B, Lt)
            on_first = text_rows[:, :, 0]
            video_share[-1].append(float((on_video * queries).sum() / weight))
            token0_share[-1].append(float((on_first * queries).sum() / weight))
    own, swapped, named_mask = np.array(correct["own"]), np.array(correct["swapped"]), np.array(named)

    def pct(x: np.ndarray) -> float | None:
        return float(100 * x.mean()) if len(x) else None

    return {
        "clips": len(probes),
        "object_own": pct(own),
        "object_swapped": pct(swapped),
        "object_own_named": pct(own[named_mask]),
        "object_swapped_named": pct(swapped[named_mask]),
        "object_own_unnamed": pct(own[~named_mask]),
        "object_swapped_unnamed": pct(swapped[~named_mask]),
        "attention_to_video": [100 * x for x in np.mean(video_share, 0).tolist()],
        "attention_to_video_token0": [100 * x for x in np.mean(token0_share, 0).tolist()],
        **vtm_reads,
        **vtm_on_asr_negatives(pretraining, table, tokenizer, config, val),
    }


def vtm_on_asr_negatives(pretraining: Any, table: Any, tokenizer: Any, config: Any, val: Any) -> dict[str, float]:
    """VTM accuracy on the validation pairs drawn with ASR negatives (the paper's VTM), for a run trained with
    `data.negatives: video | both`, whose own validation mixes in video negatives; {} for an ASR-negative run."""
    from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, validation_indices

    if config.data.negatives == "asr":
        return {}
    shown = dataclasses.replace(config.data, negatives="asr", mask_prob=0.0)
    data = PretrainDataset(
        table, tokenizer, shown, videos=val, seed=config.seed, max_video_tokens=config.model.max_video_tokens
    )
    training = pretraining.training
    pretraining.eval()
    _, logits, labels = embed(pretraining, data, VAL_EPOCH, validation_indices(len(data), config.data.val_samples))
    pretraining.train(training)
    return {"vtm_acc_asr_negatives": 100.0 * float(((logits > 0).float() == labels).float().mean())}


def oracle_target(sample: Any, tokenizer: Any) -> tuple[Any, bool] | None:
    """`sample` with the object named by its truly matching caption masked at every mention in its text and
    predicted at that caption (None when no caption matches or it names no object), and whether the sample
    corpus' dense captioner can name that object."""
    from decembert_cli.data.batch import IGNORE_INDEX, TextSegment, TokenType
    from decembert_cli.data.sample.vocabulary import CAPTIONER_OBJECTS, OBJECTS

    object_id = {int(tokenizer.convert_tokens_to_ids(o)): o for o in OBJECTS}
    if sample.aligned < 0:
        return None
    caption = next(s for s in sample.segments if s.candidate == sample.aligned)
    target = next((t for t in caption.ids if t in object_id), None)
    if target is None:
        return None
    mask_id = int(tokenizer.mask_token_id)
    segments = []
    for seg in sample.segments:
        ids = [mask_id if t == target else t for t in seg.ids]
        hit = seg.candidate == sample.aligned and seg.kind == TokenType.ASR
        labels = [t if hit and t == target else IGNORE_INDEX for t in seg.ids]
        segments.append(TextSegment(ids, seg.kind, candidate=seg.candidate, labels=labels))
    return dataclasses.replace(sample, segments=segments), object_id[target] in CAPTIONER_OBJECTS


def main() -> None:
    from decembert_cli.config import Config, load_config

    demo_steps = load_config(Config, "demo").train.max_steps  # runs of the demo's budget keep plain folder names
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the corpus and the runs (reused)")
    parser.add_argument("--variants", nargs="+", default=["token", "concept"], choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=demo_steps, help="pre-training steps (batch 16)")
    parser.add_argument("--dim", type=int, default=512, help="width of the synthetic 2D and 3D features")
    parser.add_argument("--videos", type=int, default=320, help="videos in the sample corpus")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for every run")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "video_use_cpu2.json")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:  # torch already honours it; else every core this process may use
        torch.set_num_threads(len(os.sched_getaffinity(0)))

    corpus = args.work / "corpus"
    if not (corpus / "meta.json").exists():
        run(
            ["sample-data", str(corpus), "--feature-dim", str(args.dim), "--videos", str(args.videos), "--no-render"],
            args.work / "logs" / "sample-data.log",
        )
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        per_seed: dict[str, list[Any]] = {}
        for seed in args.seeds:
            # a run's folder names what sets it apart, so a longer run or an extra --set never resumes another's
            budget = "" if args.steps == demo_steps else f"-{args.steps}steps"
            extra = "".join(f"-{slug(x)}" for x in args.extra)
            run_dir = args.work / f"{slug(name)}{budget}{extra}-seed{seed}"
            done = (run_dir / "metrics.jsonl").exists() and any(
                json.loads(x).get("split") == "val" and json.loads(x).get("step") == args.steps
                for x in (run_dir / "metrics.jsonl").read_text().splitlines()
                if x.strip()
            )
            if not done:
                changes = [
                    f"data.root={corpus}",
                    f"model.feature_dim_2d={args.dim}",
                    f"model.feature_dim_3d={args.dim}",
                    f"train.max_steps={args.steps}",
                    f"seed={seed}",
                    *VARIANTS[name],
                    *args.extra,
                ]
                cmd = ["pretrain", "--data", "sample", "--config", "demo", "--out", str(run_dir), *sets(changes)]
                resume = ["--resume"] if (run_dir / "checkpoints").is_dir() else []
                run(cmd + resume, args.work / "logs" / f"{run_dir.name}.log")
            val = last_validation(run_dir)
            found = {k: val[k] for k in PRETRAIN_METRICS if k in val}
            found.update(probe(run_dir))
            for key, value in found.items():
                per_seed.setdefault(key, []).append(value)
            print(f"{name} seed {seed}: {json.dumps(found)}", flush=True)
        results[name] = {
            k: (summary(v) if not isinstance(v[0], list) else np.mean(v, 0).tolist())
            for k, v in per_seed.items()
            if all(x is not None for x in v)
        }
    out = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "config": "demo (small, batch 16)",
        "steps": args.steps,
        "seeds": args.seeds,
        "extra": args.extra,
        "spread": "half the range over the seeds",
        "seconds": round(time.perf_counter() - started, 1),
        "variants": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.json.exists():  # keep the variants measured by earlier invocations
        earlier = json.loads(args.json.read_text())
        if earlier.get("steps") == args.steps and earlier.get("extra") == args.extra:
            out["variants"] = {**earlier.get("variants", {}), **results}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out["variants"]))


def markdown(variants: dict[str, dict[str, Any]]) -> str:
    def cell(entry: Any) -> str:
        if not isinstance(entry, dict):
            return "-"
        return f"{entry['mean']:.1f} ± {entry['spread']:.1f}" if len(entry["values"]) > 1 else f"{entry['mean']:.1f}"

    lines = [
        "| variant | object own / swapped video | unnamed by captioner own / swapped | MLM ASR | MLM dense | VTM "
        "| matching pairs called matching, own / swapped video "
        "| ASR of positives own / swapped | text->video attention per layer (token 0) |",
        "|" + "---|" * 8,
    ]
    for name, r in variants.items():
        att = "-"
        if "attention_to_video" in r:
            att = " ".join(
                f"{a:.0f}({b:.0f})"
                for a, b in zip(r["attention_to_video"], r["attention_to_video_token0"], strict=True)
            )
        lines.append(
            f"| {name} | {cell(r.get('object_own'))} / {cell(r.get('object_swapped'))} "
            f"| {cell(r.get('object_own_unnamed'))} / {cell(r.get('object_swapped_unnamed'))} "
            f"| {cell(r.get('mlm_acc_asr'))} | {cell(r.get('mlm_acc_dense'))} | {cell(r.get('vtm_acc'))} "
            f"| {cell(r.get('vtm_positive_own_video'))} / {cell(r.get('vtm_positive_swapped_video'))} "
            f"| {cell(r.get('mlm_acc_asr_positives'))} / {cell(r.get('mlm_acc_asr_swapped_video'))} | {att} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
