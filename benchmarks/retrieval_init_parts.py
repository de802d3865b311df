"""Which part of a pre-trained encoder decides how fast MSR-VTT retrieval fine-tuning leaves chance?

Takes the full row's pre-training run of a `table6_sample.py` work folder (`pretrain-full-seed<S>`) and writes
two hybrid checkpoints beside it, each with one part replaced by the text-only initialisation's (the
packaged MiniLM-L6 BERT; a new video MLP):

- "pre-trained BERT, new video MLP": `encoder.video.*` replaced;
- "MiniLM BERT, pre-trained video MLP": `encoder.bert.*` (embeddings and layers) replaced.

Each is fine-tuned on MSR-VTT retrieval exactly as `table6_sample.py --tasks msrvtt-retrieval` fine-tunes its
rows (same steps, batch, share of the training clips, seed) and scored on the test split; the table puts
them beside the unchanged pre-trained run and the text-only initialisation when the work folder has them:

    python benchmarks/table6_sample.py --work /tmp/table6 --seeds 0 --rows full text-only --tasks msrvtt-retrieval
    python benchmarks/retrieval_init_parts.py --work /tmp/table6 --seed 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from table6_sample import TASK_STEPS, _lines, left_chance, run, sets  # noqa: E402

from decembert_cli.config import ModelConfig  # noqa: E402
from decembert_cli.model import build_encoder  # noqa: E402

TASK = "msrvtt-retrieval"
PARTS = {"pre-trained BERT, new video MLP": "encoder.video.", "MiniLM BERT, pre-trained video MLP": "encoder.bert."}


def hybrid(source: Path, dest: Path, prefix: str, text_only: dict[str, torch.Tensor]) -> None:
    """`source`'s last checkpoint with every tensor under `prefix` replaced by the text-only init's."""
    checkpoint = sorted((source / "checkpoints").glob("step-*.pt"))[-1]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = dict(saved["model"])
    swapped = [k for k in state if k.startswith(prefix)]
    assert swapped and all(state[k].shape == text_only[k].shape for k in swapped), prefix
    state.update({k: text_only[k].clone() for k in swapped})
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("step-*.pt"), dirs_exist_ok=True)
    torch.save({**saved, "model": state}, dest / "checkpoints" / checkpoint.name)


def scored(run_dir: Path) -> dict:
    """R@1 / R@5 (text to video) of a fine-tuned run and the first logged step with its loss below chance."""
    found = json.loads((run_dir / "eval-test" / "metrics.json").read_text())["metrics"]
    curve = {r["step"]: round(r["loss"], 3) for r in _lines(run_dir) if "loss" in r and r["step"] % 40 == 0}
    return {
        "t2v_R@1": found["t2v_R@1"],
        "t2v_R@5": found["t2v_R@5"],
        "left chance at step": left_chance(run_dir),
        "training loss every 40 steps": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a table6_sample.py work folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.5, help="as table6_sample.py's --fraction")
    parser.add_argument("--dim", type=int, default=512, help="as table6_sample.py's --dim")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "retrieval_init_parts.json")
    args = parser.parse_args()
    source = args.work / f"pretrain-full-seed{args.seed}"
    if not source.is_dir():
        raise SystemExit(f"{source} is missing: run table6_sample.py --rows full --seeds {args.seed} first")
    torch.manual_seed(args.seed)  # the new video MLP
    model = ModelConfig(arch="small", init="auto", feature_dim_2d=args.dim, feature_dim_3d=args.dim)
    text_only = {f"encoder.{k}": v for k, v in build_encoder(model)[0].state_dict().items()}
    common = [
        f"task.root={args.work / 'corpus' / 'msrvtt'}",
        f"task.train_fraction={args.fraction}",
        f"train.max_steps={TASK_STEPS[TASK]}",
        "train.batch_size=16",
        f"seed={args.seed}",
    ]
    rows = {}
    for name, prefix in PARTS.items():
        slug = prefix.split(".")[1]
        checkpoint = args.work / f"hybrid-new-{slug}-seed{args.seed}"
        tuned = args.work / f"{TASK}-hybrid-new-{slug}-seed{args.seed}"
        if not (tuned / "eval-test" / "metrics.json").exists():
            shutil.rmtree(checkpoint, ignore_errors=True)
            shutil.rmtree(tuned, ignore_errors=True)
            hybrid(source, checkpoint, prefix, text_only)
            logs = args.work / "logs"
            run(
                ["finetune", TASK, "--checkpoint", str(checkpoint), *sets(common), "--out", str(tuned)],
                logs / f"{tuned.name}.log",
            )
            run(
                ["evaluate", TASK, "--checkpoint", str(tuned), "--split", "test", "--out", str(tuned / "eval-test")],
                logs / f"{tuned.name}-eval.log",
            )
        rows[name] = scored(tuned)
    for name, row in {"pre-trained (full row)": "full", "text-only init": "text-only"}.items():
        tuned = args.work / f"{TASK}-{row}-seed{args.seed}"
        if (tuned / "eval-test" / "metrics.json").exists():
            rows[name] = scored(tuned)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seed": args.seed, "fine-tuning": common, "rows": rows}, indent=2) + "\n")
    for name, row in rows.items():
        left = row["left chance at step"]
        print(f"{name:40s} R@1 {row['t2v_R@1']:6.2f}  R@5 {row['t2v_R@5']:6.2f}  left chance at step {left}")


if __name__ == "__main__":
    main()
