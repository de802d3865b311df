"""The paper's Tables 6 and 7 on the sample corpus: cumulative pre-training rows and what they do downstream.

Rows, cumulative as in the paper (`decembert_cli.recipes.ABLATIONS`): "MLM & Matching" (one ASR
caption, no dense captions, no constrained loss), "+ neighbouring ASR captions", "+ dense captions",
"+ constrained loss" (the full model); and, without video pre-training, the text-only initialisation
(MiniLM-L6 weights, random video MLP) and a random one. Each pre-training row runs
`decembert pretrain --data sample --config demo` for the same steps and seed (with `--set`s common to
every row, e.g. the masking unit); every row is then fine-tuned on MSR-VTT captioning and MSRVTT-QA
in a low-resource setting (a fixed share of the downstream training clips, `task.train_fraction`)
for the same steps, and scored on the val split (Table 7's split).

Table 6: MLM accuracy on ASR and dense-caption tokens and VTM accuracy on the held-out videos, plus
what the video contributes (MLM accuracy on the ASR of matching pairs with the clip's own video and
with another clip's) and the alignment accuracy of u with its baselines. Table 7: BLEU@4, METEOR,
ROUGE-L, CIDEr-D and QA accuracy. Mean +- spread (half the range) over the seeds that ran.

Runs live in --work: finished runs are reused and an interrupted pre-training run continues, so the
command can be stopped and started again; the table is made from every finished run in --work, so
seeds can be added per row in later invocations:

    python benchmarks/table6_sample.py --work /tmp/table6 --seeds 0 1 --rows mlm-matching full
    python benchmarks/table6_sample.py --work /tmp/table6 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decembert_cli.engine.run_log import last_validation  # noqa: E402  (shares in per cent, old logs too)
from decembert_cli.recipes import ABLATIONS, TABLE6_PAPER, TABLE7_PAPER  # noqa: E402

LABELS = {
    "mlm-matching": "MLM & Matching",
    "neighbours": "+ neighbouring ASR captions",
    "dense": "+ dense captions",
    "full": "+ constrained loss (full)",
    "text-only": "text-only init (no video pre-training)",
    "random": "random init",
}
INIT_ROWS = {"text-only": ["model.init=auto"], "random": ["model.init=none"]}
PRETRAIN_METRICS = (
    "mlm_acc_asr",
    "mlm_acc_dense",
    "vtm_acc",
    "mlm_acc_asr_positives",
    "mlm_acc_asr_swapped_video",
    "alignment_acc",
    "alignment_own_caption",
    "alignment_prev_caption",
    "entropy",
)
TASKS = {"msrvtt-caption": ("BLEU@4", "METEOR", "ROUGE-L", "CIDEr-D"), "msrvtt-qa": ("accuracy",)}
# not in the paper's Table 7: the demo's other downstream task (`make demo` fine-tunes it for 400 steps), with
# the first logged training step whose loss is below LEFT_CHANCE (binary matching starts at ln 2 = 0.693)
EXTRA_TASKS = {"msrvtt-retrieval": ("t2v_R@1", "t2v_R@5", "v2t_R@1", "left chance at step")}
TASK_STEPS = {"msrvtt-retrieval": 400}  # fine-tuning steps where not --finetune-steps
TASK_SPLITS = {"msrvtt-retrieval": "test"}  # MSR-VTT retrieval has only its 1k-A test split; not --split
LEFT_CHANCE = 0.6
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


def _lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def left_chance(run_dir: Path) -> int | None:
    """The first logged training step of a fine-tuning run whose loss is below LEFT_CHANCE (None: never)."""
    return next((r["step"] for r in _lines(run_dir) if r.get("loss", 1.0) < LEFT_CHANCE), None)


def pretrained(run_dir: Path, steps: int) -> bool:
    return any(r.get("split") == "val" and r.get("step") == steps for r in _lines(run_dir))


def summary(values: list[float | None]) -> dict:
    """Mean and half the range over the seeds; None (a fine-tuning run that never left chance) is kept in
    `values` (JSON null) and counted in `never`, not averaged."""
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "spread": None, "values": values, "never": len(values)}
    found = {"mean": statistics.fmean(known), "spread": (max(known) - min(known)) / 2, "values": values}
    return found | ({"never": len(values) - len(known)} if len(known) < len(values) else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the corpus and every run (reused)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=[*ABLATIONS, *INIT_ROWS], choices=[*ABLATIONS, *INIT_ROWS])
    parser.add_argument("--steps", type=int, default=400, help="pre-training steps (batch 16)")
    parser.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning steps (batch 16)")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the downstream training clips")
    parser.add_argument("--split", default="val", help="downstream split scored (Table 7: val)")
    parser.add_argument(
        "--tasks", nargs="*", default=list(TASKS), choices=[*TASKS, *EXTRA_TASKS], help="none: pre-training only"
    )
    parser.add_argument("--dim", type=int, default=512, help="width of the synthetic 2D and 3D features")
    parser.add_argument("--videos", type=int, default=320, help="pre-training videos (a tenth held out)")
    parser.add_argument("--clips", type=int, default=480, help="downstream clips (split 70 / 10 / 20 per cent)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="--set for every pre-training run")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "table6_sample_cpu2.json")
    args = parser.parse_args()

    corpus = args.work / "corpus"
    if not (corpus / "meta.json").exists():
        generate = ["sample-data", str(corpus), "--feature-dim", str(args.dim), "--videos", str(args.videos)]
        run([*generate, "--clips", str(args.clips), "--no-render"], args.work / "logs" / "sample-data.log")
    dims = [f"model.feature_dim_2d={args.dim}", f"model.feature_dim_3d={args.dim}"]
    if not (corpus / "decembert-index" / "manifest.json").exists():  # with dense captions: every row can read it
        run(["data", "index", "sample", *sets([f"data.root={corpus}", *dims])], args.work / "logs" / "index.log")
    started = time.perf_counter()
    for seed in args.seeds:
        for row in args.rows:
            if row in ABLATIONS:
                pretrain_row(args, corpus, dims, row, seed)
            for task in args.tasks:
                finetune_row(args, corpus, dims, row, task, seed)
            print(f"seed {seed}: {row} done ({time.perf_counter() - started:.0f} s)", flush=True)
    table = collect(args.work)
    result = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pretrain": {"config": "demo (small, batch 16)", "steps": args.steps, "extra": args.extra, "dim": args.dim},
        "finetune": {
            "steps": {**dict.fromkeys(TASKS, args.finetune_steps), **TASK_STEPS},
            "batch_size": 16,
            "train_fraction": args.fraction,
        },
        "split": args.split,
        "spread": "half the range over the seeds",
        "seconds_this_invocation": round(time.perf_counter() - started, 1),
        "rows": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(table))


def pretrain_row(args: argparse.Namespace, corpus: Path, dims: list[str], row: str, seed: int) -> None:
    run_dir = args.work / f"pretrain-{row}-seed{seed}"
    if pretrained(run_dir, args.steps):
        return
    changes = [f"data.root={corpus}", *dims, f"train.max_steps={args.steps}", f"seed={seed}"]
    cmd = ["pretrain", "--data", "sample", "--config", "demo", "--out", str(run_dir)]
    cmd += sets([*changes, *ABLATIONS[row], *args.extra])
    resume = ["--resume"] if (run_dir / "checkpoints").is_dir() else []
    run(cmd + resume, args.work / "logs" / f"{run_dir.name}.log")


def finetune_row(args: argparse.Namespace, corpus: Path, dims: list[str], row: str, task: str, seed: int) -> None:
    ft = args.work / f"{task}-{row}-seed{seed}"
    split = TASK_SPLITS.get(task, args.split)
    scored = ft / f"eval-{split}" / "metrics.json"
    if scored.exists():
        return
    steps = TASK_STEPS.get(task, args.finetune_steps)
    common = [
        f"task.root={corpus / 'msrvtt'}",
        f"task.train_fraction={args.fraction}",
        f"train.max_steps={steps}",
        "train.batch_size=16",
        f"seed={seed}",
    ]
    if row in ABLATIONS:
        init = ["--checkpoint", str(args.work / f"pretrain-{row}-seed{seed}")]
    else:
        init = sets(["model.arch=small", *INIT_ROWS[row], *dims])
    if not any(r.get("step") == steps for r in _lines(ft)):
        if ft.exists():
            shutil.rmtree(ft)  # an unfinished fine-tuning run (minutes long): start it again
        run(["finetune", task, *init, *sets(common), "--out", str(ft)], args.work / "logs" / f"{ft.name}.log")
    evaluate = ["evaluate", task, "--checkpoint", str(ft), "--split", split, "--out", str(scored.parent)]
    run(evaluate, args.work / "logs" / f"{ft.name}-eval.log")


def collect(work: Path) -> dict:
    """Table 6 and 7 numbers from every finished run in `work`, by row: {metric: summary over seeds}."""
    table: dict[str, dict] = {}
    for row in [*ABLATIONS, *INIT_ROWS]:
        pre: dict[str, list[float | None]] = {}
        down: dict[str, list[float | None]] = {}
        seeds: set[int] = set()
        for run_dir in sorted(work.glob(f"pretrain-{row}-seed*")):
            steps = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"]
            if not pretrained(run_dir, steps):
                continue  # not finished
            val = last_validation(run_dir)
            seeds.add(int(re.sub(r".*seed", "", run_dir.name)))
            for key in PRETRAIN_METRICS:
                if key in val:
                    pre.setdefault(key, []).append(val[key])
        for task, metrics in {**TASKS, **EXTRA_TASKS}.items():
            for metrics_file in sorted(work.glob(f"{task}-{row}-seed*/eval-*/metrics.json")):
                found = json.loads(metrics_file.read_text())["metrics"]
                step = left_chance(metrics_file.parents[1])
                found["left chance at step"] = step  # None: never within the run
                for key in metrics:
                    if key in found:
                        down.setdefault(f"{task} {key}", []).append(found[key])
        if pre or down:
            table[row] = {
                "label": LABELS[row],
                "seeds": sorted(seeds),
                "pretrain": {k: summary(v) for k, v in pre.items()},
                "downstream": {k: summary(v) for k, v in down.items()},
                "paper_table6": TABLE6_PAPER.get(row, {}),
                "paper_table7": TABLE7_PAPER.get(row, {}),
            }
    return table


def markdown(table: dict) -> str:
    def cell(entry: dict | None) -> str:
        if entry is None:
            return "-"
        never = f", never in {entry['never']}" if entry.get("never") else ""
        if entry["mean"] is None:
            return f"never ({len(entry['values'])} seeds)"
        known = len(entry["values"]) - entry.get("never", 0)
        mean = f"{entry['mean']:.1f} ± {entry['spread']:.1f}" if known > 1 else f"{entry['mean']:.1f} (1 seed)"
        return mean + never

    def paper(row: dict, table_key: str, key: str) -> str:
        value = row[table_key].get(key)
        return f" [{value:g}]" if value is not None else ""

    lines = [
        "Table 6 (sample corpus; [the paper's number])",
        "| row | MLM ASR | MLM dense | VTM | ASR of matching pairs: own / swapped video "
        "| alignment (own-caption baseline) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.values():
        p = row["pretrain"]
        if not p:
            continue
        lines.append(
            f"| {row['label']} | {cell(p.get('mlm_acc_asr'))}{paper(row, 'paper_table6', 'mlm_acc_asr')} "
            f"| {cell(p.get('mlm_acc_dense'))}{paper(row, 'paper_table6', 'mlm_acc_dense')} "
            f"| {cell(p.get('vtm_acc'))}{paper(row, 'paper_table6', 'vtm_acc')} "
            f"| {cell(p.get('mlm_acc_asr_positives'))} / {cell(p.get('mlm_acc_asr_swapped_video'))} "
            f"| {cell(p.get('alignment_acc'))} ({cell(p.get('alignment_own_caption'))}) |"
        )
    for title, tasks in (
        ("Table 7 (sample corpus, low-resource fine-tuning; [the paper's number])", TASKS),
        ("Beyond Table 7: the demo's retrieval fine-tuning", EXTRA_TASKS),
    ):
        keys = [f"{task} {m}" for task, metrics in tasks.items() for m in metrics]
        rows = [row for row in table.values() if any(k in row["downstream"] for k in keys)]
        if not rows:
            continue
        lines += ["", title, "| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for row in rows:
            d = row["downstream"]
            cells = [cell(d.get(k)) + paper(row, "paper_table7", k.split(" ", 1)[1]) for k in keys]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
