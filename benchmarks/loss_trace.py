"""Record every logged loss of short runs on the sample corpus, to show that a refactor changes no number.

Generates a small sample corpus (synthetic features), pre-trains the `tiny` model for 20 steps with
validation, then fine-tunes msrvtt-qa, msrvtt-retrieval and msrvtt-caption for 6 steps each from that
checkpoint, all through the CLI on the CPU with one data-loading process. Writes every logged
training loss and validation metric (full float precision) to one JSON file; `--compare OTHER.json`
exits non-zero naming the first value that differs.

    python benchmarks/loss_trace.py --out /tmp/before.json            # on the old commit
    python benchmarks/loss_trace.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DIM = 16
TASK_STEPS = 6


def _cli(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "decembert_cli", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def _sets(*pairs: str) -> list[str]:
    return [x for pair in pairs for x in ("--set", pair)]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _numbers(records: list[dict]) -> list[dict]:
    """The logged numbers of each record, without timings (they differ run to run)."""
    timing = ("time", "seconds", "per_s", "samples_s", "elapsed", "eta", "wait")
    out = []
    for record in records:
        kept = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not any(t in k for t in timing)}
        kept.update({k: v for k, v in record.items() if k in ("split", "event")})
        out.append(kept)
    return out


def trace(workdir: Path) -> dict:
    corpus = workdir / "corpus"
    _cli("sample-data", str(corpus), "--videos", "24", "--feature-dim", str(DIM), "--no-render", "--clips", "48")
    common = _sets("train.device=cpu")
    pre = workdir / "pretrain"
    _cli(
        "pretrain",
        "--data",
        "sample",
        "--config",
        "tiny",
        "--out",
        str(pre),
        *common,
        *_sets(
            f"data.root={corpus}",
            f"model.feature_dim_2d={DIM}",
            f"model.feature_dim_3d={DIM}",
            "data.workers=0",
            "data.val_samples=16",
            "train.batch_size=8",
            "train.max_steps=20",
            "train.log_every=1",
            "train.validate_every=10",
            "train.checkpoint_every=20",
        ),
    )
    result = {"pretrain": _numbers(_metrics(pre))}
    for task in ("msrvtt-qa", "msrvtt-retrieval", "msrvtt-caption"):
        run = workdir / task
        extra = ["task.meteor=false"] if task.endswith("caption") else []
        _cli(
            "finetune",
            task,
            "--checkpoint",
            str(pre),
            "--out",
            str(run),
            *common,
            *_sets(
                f"task.root={corpus / 'msrvtt'}",
                "train.batch_size=8",
                f"train.max_steps={TASK_STEPS}",
                "train.log_every=1",
                *extra,
            ),
        )
        result[task] = _numbers(_metrics(run))
    return result


def _first_difference(a: object, b: object, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'after' if key not in a else 'before'}"
            found = _first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} records after, {len(b)} before"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} after, {b!r} before"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="a trace from another commit: fail on the first difference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = trace(Path(tmp))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    values = sum(len(r) for records in result.values() for r in records)
    print(f"{values} logged values in {sum(len(r) for r in result.values())} records -> {args.out}")
    if args.compare:
        found = _first_difference(result, json.loads(args.compare.read_text()))
        if found:
            sys.exit(f"DIFFERENT: {found}")
        print(f"identical to {args.compare}")


if __name__ == "__main__":
    main()
