"""The paper's Table 6 ablation on the sample corpus: one pre-training run per setting, same seed and budget.

Settings: the full model, no entropy loss (lambda = 0), no neighbouring captions (k = 0), no dense
captions. Each runs `decembert pretrain --data sample --config demo` with the given number of steps
in its own process; the table lists the last validation of each: MLM accuracy on ASR and dense
tokens, VTM accuracy, the mean constrained loss, and alignment accuracy next to its baseline.

    python benchmarks/sample_ablation.py --steps 400
    python benchmarks/sample_ablation.py --steps 1600 --only full no-entropy --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "full": [],
    "no-entropy": ["loss.constrained_lambda=0"],
    "no-neighbours": ["data.neighbours=0"],
    "no-dense": ["data.use_dense=false"],
}
COLUMNS = ("mlm_acc_asr", "mlm_acc_dense", "vtm_acc", "constrained_loss", "alignment_acc", "alignment_own_caption")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--corpus", type=Path, default=None, help="a sample corpus folder (default: the cache)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for every run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            sets = [f"train.max_steps={args.steps}", f"seed={args.seed}", *SETTINGS[name], *args.extra]
            if args.corpus is not None:
                sets.append(f"data.root={args.corpus}")
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "decembert_cli", "pretrain", "--data", "sample", "--config", "demo", "--out", str(run)]
            cmd += [x for s in sets for x in ("--set", s)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            rows[name] = next(r for r in reversed(lines) if r.get("split") == "val")
            print(f"{name}: done", file=sys.stderr)
    print(f"{'setting':<14}" + "".join(f"{c:>23}" for c in COLUMNS))
    for name, r in rows.items():
        print(f"{name:<14}" + "".join(f"{r[c]:>23.4f}" if c in r else f"{'-':>23}" for c in COLUMNS))
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "seed": args.seed, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
