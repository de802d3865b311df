#!/usr/bin/env bash
# One prepared GPU session for the extract-features issue (not yet run: no GPU was lent): the paper's
# backbones (ResNet-152 + ResNeXt-101, random weights) through the pipeline against the naive
# baseline on CUDA in fp32 and bf16, and a 2-GPU torchrun split if there are two. Writes under $OUT.
set -uo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || echo "pip failed" >> "$OUT/pip.log"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"
timeout 240 python benchmarks/extract.py --paper --device cuda --videos 8 --seconds 60 --readers 8 --batch-size 64 \
  --json "$OUT/extract_h200_fp32.json" > "$OUT/extract_fp32.txt" 2>&1; echo "fp32 rc=$?" >> "$OUT/rc.txt"
python -c "from decembert_cli.data.sample_corpus import generate; generate(__import__('pathlib').Path('/tmp/s'), videos=16, render=True, features='none')"
timeout 120 decembert extract-features /tmp/s/videos --out "$OUT/bf16" --random-init --backbone-2d resnet152 --backbone-3d resnext101 \
  --precision bf16 --readers 8 --batch-size 64 > "$OUT/bf16.log" 2>&1; echo "bf16 rc=$?" >> "$OUT/rc.txt"
timeout 120 decembert extract-features /tmp/s/videos --out "$OUT/fp32" --random-init --backbone-2d resnet152 --backbone-3d resnext101 \
  --precision fp32 --readers 8 --batch-size 64 > "$OUT/fp32.log" 2>&1; echo "fp32 cli rc=$?" >> "$OUT/rc.txt"
python - >> "$OUT/bf16_vs_fp32.txt" 2>&1 <<'PY'
import numpy as np, pathlib, os
out = pathlib.Path(os.environ.get("OUT", "/tmp/out"))
for s in ("2d", "3d"):
    rel = []
    for p in sorted((out / "fp32" / s).glob("*.npy")):
        a, b = np.load(p).astype(np.float32), np.load(out / "bf16" / s / p.name).astype(np.float32)
        rel.append(np.linalg.norm(a - b) / np.linalg.norm(a))
    print(s, "relative difference bf16 vs fp32: max", max(rel), "mean", float(np.mean(rel)))
PY
rm -rf "$OUT"/bf16/*/*.npy "$OUT"/fp32/*/*.npy
