"""The paper's Table 6 on the sample corpus: pre-training ablations and what they do downstream.

Rows: the full model; no neighbouring captions (data.neighbours=0); no dense captions
(data.use_dense=false); no entropy loss (loss.constrained_lambda=0); and, as references without video
pre-training, the text-only initialisation (MiniLM-L6 weights, random video MLP) and a random one.
Each pre-training row runs `decembert pretrain --data sample --config demo` for the same number of
steps and seed; then every row is fine-tuned on msrvtt-qa and msrvtt-retrieval in a low-resource
setting (a fixed `--fraction` of the downstream training clips, `task.train_fraction`) for the same
number of steps, and evaluated on the test split. Everything is repeated for each seed; the table
gives mean +- spread (half the range over the seeds) of: MLM accuracy on ASR and dense-caption
tokens, VTM accuracy, MLM accuracy on the ASR of matching pairs with the clip's own video and with
another clip's video features (what the video contributes), alignment accuracy (with its baselines
and the share of argmax u per time offset) from the last pre-training validation, and QA accuracy
and text-to-video R@1 downstream.

Runs live in --work (resumable: finished runs are reused), results go to --json.

    python benchmarks/table6_sample.py --work /tmp/table6 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRETRAIN_ROWS = {
    "full": [],
    "no neighbours (k=0)": ["data.neighbours=0"],
    "no dense captions": ["data.use_dense=false"],
    "lambda=0": ["loss.constrained_lambda=0"],
}
INIT_ROWS = {"text-only init": ["model.init=auto"], "random init": ["model.init=none"]}
PRETRAIN_METRICS = (
    "mlm_acc_asr",
    "mlm_acc_dense",
    "vtm_acc",
    "alignment_acc",
    "alignment_own_caption",
    "alignment_prev_caption",
    "entropy",
    "argmax_u_offset-1",
    "argmax_u_offset+0",
    "argmax_u_offset+1",
    "mlm_acc_asr_positives",
    "mlm_acc_asr_swapped_video",
)
TASKS = {"msrvtt-qa": "accuracy", "msrvtt-retrieval": "t2v_R@1"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(cmd: list[str], log: Path) -> None:
    """Run one CLI command, its output in `log`; stop the benchmark with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "decembert_cli", *cmd], stdout=handle, stderr=subprocess.STDOUT, env=ENV
        )
    if done.returncode != 0:
        raise SystemExit(f"failed ({log}):\n{log.read_text()[-3000:]}")


def sets(pairs: list[str]) -> list[str]:
    return [x for s in pairs for x in ("--set", s)]


def last_validation(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return next(r for r in reversed(lines) if r.get("split") == "val")


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for the corpus and every run (reused when rerun)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--finetune-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds whose pre-training runs are also fine-tuned (default: every seed); fine-tuning 6 rows x 2 tasks "
        "costs more than pre-training on a CPU",
    )
    parser.add_argument("--steps", type=int, default=400, help="pre-training steps (batch 16)")
    parser.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning steps (batch 16)")
    parser.add_argument(
        "--fraction", type=float, default=0.2, help="share of the downstream training clips (task.train_fraction)"
    )
    parser.add_argument("--dim", type=int, default=512, help="width of the synthetic 2D and 3D features")
    parser.add_argument(
        "--videos", type=int, default=320, help="videos in the sample corpus (a tenth are held out for validation)"
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra --set for every pre-training run"
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "table6_sample_cpu2.json")
    args = parser.parse_args()

    corpus = args.work / "corpus"
    if not (corpus / "meta.json").exists():
        run(
            ["sample-data", str(corpus), "--feature-dim", str(args.dim), "--videos", str(args.videos), "--no-render"],
            args.work / "logs" / "sample-data.log",
        )
    dims = [f"model.feature_dim_2d={args.dim}", f"model.feature_dim_3d={args.dim}"]
    started = time.perf_counter()
    rows: dict[str, dict] = {
        name: {"pretrain": {}, "downstream": {t: [] for t in TASKS}} for name in [*PRETRAIN_ROWS, *INIT_ROWS]
    }
    for seed in args.seeds:
        for name, changes in PRETRAIN_ROWS.items():
            run_dir = args.work / f"pretrain-{slug(name)}-seed{seed}"
            if not (run_dir / "checkpoints").is_dir() or not any(
                r.get("split") == "val" and r["step"] == args.steps for r in _lines(run_dir)
            ):
                cmd = [
                    "pretrain",
                    "--data",
                    "sample",
                    "--config",
                    "demo",
                    "--out",
                    str(run_dir),
                    *sets(
                        [
                            f"data.root={corpus}",
                            *dims,
                            f"train.max_steps={args.steps}",
                            f"seed={seed}",
                            *changes,
                            *args.extra,
                        ]
                    ),
                ]
                run(
                    cmd + (["--resume"] if (run_dir / "metrics.jsonl").exists() else []),
                    args.work / "logs" / f"{run_dir.name}.log",
                )
            val = last_validation(run_dir)
            for key in PRETRAIN_METRICS:
                if key in val:
                    rows[name]["pretrain"].setdefault(key, []).append(100 * val[key] if key != "entropy" else val[key])
            print(f"seed {seed}: pre-trained {name}", flush=True)
        if args.finetune_seeds is not None and seed not in args.finetune_seeds:
            continue
        for name in rows:
            for task, metric in TASKS.items():
                ft = args.work / f"{task}-{slug(name)}-seed{seed}"
                if not (ft / "eval-test" / "metrics.json").exists():
                    common = [
                        f"task.root={corpus / 'msrvtt'}",
                        f"task.train_fraction={args.fraction}",
                        f"train.max_steps={args.finetune_steps}",
                        "train.batch_size=16",
                        f"seed={seed}",
                    ]
                    if name in PRETRAIN_ROWS:
                        init = ["--checkpoint", str(args.work / f"pretrain-{slug(name)}-seed{seed}")]
                    else:
                        init = sets(["model.arch=small", *INIT_ROWS[name], *dims])
                    if ft.exists():
                        # an unfinished fine-tuning run: start it again
                        subprocess.run(["rm", "-rf", str(ft)], check=True)
                    run(
                        ["finetune", task, *init, *sets(common), "--out", str(ft)],
                        args.work / "logs" / f"{ft.name}.log",
                    )
                    run(["evaluate", task, "--checkpoint", str(ft)], args.work / "logs" / f"{ft.name}-eval.log")
                result = json.loads((ft / "eval-test" / "metrics.json").read_text())["metrics"]
                rows[name]["downstream"][task].append(result[metric])
            print(f"seed {seed}: fine-tuned {name}", flush=True)

    table = {
        name: {
            "pretrain": {k: summary(v) for k, v in row["pretrain"].items() if v},
            "downstream": {f"{task} {TASKS[task]}": summary(v) for task, v in row["downstream"].items() if v},
        }
        for name, row in rows.items()
    }
    result = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "seeds": args.seeds,
        "pretrain": {
            "config": "demo (small, batch 16)",
            "steps": args.steps,
            "extra": args.extra,
            "feature_dim": args.dim,
        },
        "finetune": {
            "steps": args.finetune_steps,
            "batch_size": 16,
            "train_fraction": args.fraction,
            "seeds": args.finetune_seeds if args.finetune_seeds is not None else args.seeds,
        },
        "spread": "half the range over the seeds",
        "seconds": round(time.perf_counter() - started, 1),
        "rows": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(table))


def _lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def markdown(table: dict) -> str:
    def cell(entry: dict | None) -> str:
        if entry is None:
            return "-"
        return (
            f"{entry['mean']:.1f} ± {entry['spread']:.1f}"
            if len(entry["values"]) > 1
            else f"{entry['mean']:.1f} (1 seed)"
        )

    head = (
        "| row | MLM ASR | MLM dense | VTM | MLM ASR own / swapped video | alignment (own / prev baseline) "
        "| argmax u at s_i-1 / s_i / s_i+1 | QA acc. | R@1 |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, row in table.items():
        p, d = row["pretrain"], row["downstream"]
        baselines = (
            f" ({p['alignment_own_caption']['mean']:.1f} / {p['alignment_prev_caption']['mean']:.1f})"
            if "alignment_own_caption" in p
            else ""
        )
        offsets = (
            " / ".join(
                f"{p[k]['mean']:.0f}" for k in ("argmax_u_offset-1", "argmax_u_offset+0", "argmax_u_offset+1") if k in p
            )
            or "-"
        )
        video = (
            " / ".join(f"{p[k]['mean']:.1f}" for k in ("mlm_acc_asr_positives", "mlm_acc_asr_swapped_video") if k in p)
            or "-"
        )
        lines.append(
            f"| {name} | {cell(p.get('mlm_acc_asr'))} | {cell(p.get('mlm_acc_dense'))} | "
            f"{cell(p.get('vtm_acc'))} | {video} | "
            f"{cell(p.get('alignment_acc'))}{baselines} | {offsets} | {cell(d.get('msrvtt-qa accuracy'))} | "
            f"{cell(d.get('msrvtt-retrieval t2v_R@1'))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
