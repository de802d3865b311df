"""Downstream tasks on the sample corpus: fine-tuned from a DeCEMBERT pre-training checkpoint vs other inits.

For msrvtt-qa and msrvtt-retrieval (and msrvtt-caption with --tasks) on the sample corpus' clips
(features extracted as `make demo` does), fine-tunes the same `small` model with the same budget from
- pretrained: the pre-training checkpoint (`make demo` writes one to demo/runs/TIME/pretrain);
- text-only: MiniLM-L6 text weights, random video MLP (model.init=auto), no video pre-training;
- random: every weight random (model.init=none);
then evaluates each on the test split and writes the metrics with chance levels.

    python benchmarks/sample_finetune.py --corpus demo/corpus --pretrained demo/runs/TIME/pretrain
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("demo/corpus"))
    parser.add_argument("--pretrained", type=Path, required=True, help="pre-training run folder or checkpoint")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=["msrvtt-qa", "msrvtt-retrieval"], help="also: msrvtt-caption")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sample_finetune_cpu2.json")
    args = parser.parse_args()

    dims = (
        json.loads((args.corpus / "msrvtt" / "features" / "2d" / "stream.json").read_text())["dim"],
        json.loads((args.corpus / "msrvtt" / "features" / "3d" / "stream.json").read_text())["dim"],
    )
    common = [
        f"task.root={args.corpus / 'msrvtt'}",
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}",
    ]
    inits = {
        "pretrained": ["--checkpoint", str(args.pretrained)],
        "text-only": ["--set", "model.arch=small", "--set", "model.init=auto"],
        "random": ["--set", "model.arch=small", "--set", "model.init=none"],
    }
    results: dict = {
        "platform": platform.platform(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "feature_dims": dims,
        "chance": {},
        "runs": {},
    }
    test_qa = json.loads((args.corpus / "msrvtt" / "test_qa.json").read_text())
    train_answers = {q["answer"] for q in json.loads((args.corpus / "msrvtt" / "train_qa.json").read_text())}
    results["chance"]["msrvtt-qa accuracy (uniform over the training answers)"] = round(100 / len(train_answers), 2)
    gallery = sum(1 for _ in (args.corpus / "msrvtt" / "MSRVTT_JSFUSION_test.csv").open()) - 1
    results["chance"]["msrvtt-retrieval t2v_R@1"] = round(100 / gallery, 2)
    results["chance"]["msrvtt-retrieval t2v_MedR"] = (gallery + 1) / 2
    results["test_items"] = {"msrvtt-qa": len(test_qa), "msrvtt-retrieval": gallery}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            for init, extra in inits.items():
                run = Path(tmp) / f"{task}-{init}"
                sets = [
                    *common,
                    *(
                        [f"model.feature_dim_2d={dims[0]}", f"model.feature_dim_3d={dims[1]}"]
                        if init != "pretrained"
                        else []
                    ),
                ]
                started = time.perf_counter()
                cmd = [
                    sys.executable,
                    "-m",
                    "decembert_cli",
                    "finetune",
                    task,
                    *extra,
                    *[x for s in sets for x in ("--set", s)],
                    "--out",
                    str(run),
                ]
                if task.endswith("caption"):
                    cmd += [
                        "--set",
                        "task.meteor=false",
                    ]  # (METEOR: a 2 GB JVM per run; BLEU, ROUGE-L and CIDEr-D suffice here)
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                train_s = time.perf_counter() - started
                subprocess.run(
                    [sys.executable, "-m", "decembert_cli", "evaluate", task, "--checkpoint", str(run)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                metrics = json.loads((run / "eval-test" / "metrics.json").read_text())["metrics"]
                results["runs"][f"{task} / {init}"] = {
                    "train_s": round(train_s, 1),
                    **{k: round(v, 2) for k, v in metrics.items()},
                }
                print(task, init, results["runs"][f"{task} / {init}"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
