#!/usr/bin/env bash
# One prepared GPU session for the pre-training issue: install without deps, a learning sweep on the
# sample corpus (runs in parallel on one GPU), the throughput benchmark, and a torchrun smoke test.
# Writes everything under $OUT. Needs .gpu_assets/minilm (MiniLM-L6 weights + vocabulary, fp16).
set -uo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || echo "pip failed" >> "$OUT/pip.log"
python -c "import decembert_cli, torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"
python -c "from decembert_cli.data.sample_corpus import generate; generate(__import__('pathlib').Path('/tmp/sample'))"
M=".gpu_assets/minilm"
common=(--data sample --set data.root=/tmp/sample --set model.init=$M --set model.tokenizer=$M --set data.workers=3
        --set train.batch_size=32 --set train.log_every=50 --set train.validate_every=250 --set train.checkpoint_every=0)
run() { name=$1; shift; timeout 300 decembert pretrain "${common[@]}" "$@" --out "$OUT/runs/$name" > "$OUT/$name.log" 2>&1; echo "$name rc=$?" >> "$OUT/rc.txt"; }
run lr1e4_l1 --set train.max_steps=1500 --set train.lr=1e-4 --set loss.constrained_lambda=1 &
run lr1e4_l0 --set train.max_steps=1500 --set train.lr=1e-4 --set loss.constrained_lambda=0 &
run lr5e4_l1 --set train.max_steps=1500 --set train.lr=5e-4 --set loss.constrained_lambda=1 &
run lr5e4_l0 --set train.max_steps=1500 --set train.lr=5e-4 --set loss.constrained_lambda=0 &
wait
rm -rf "$OUT"/runs/*/checkpoints
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/env.txt"
timeout 150 python benchmarks/pretrain_throughput.py --device cuda --arch base --init none --tokenizer $M \
  --batch-size 128 --steps 30 --workers 0 4 8 --corpus /tmp/sample --json "$OUT/pretrain_throughput_h200.json" > "$OUT/throughput.txt" 2>&1
timeout 60 torchrun --nproc-per-node 2 -m decembert_cli pretrain --data sample --config tiny --set data.root=/tmp/sample \
  --set model.tokenizer=$M --set train.device=cpu --set train.batch_size=8 --set train.max_steps=4 --set data.workers=0 \
  --set train.log_every=1 --out "$OUT/runs/torchrun" > "$OUT/torchrun.log" 2>&1; echo "torchrun rc=$?" >> "$OUT/rc.txt"
rm -rf "$OUT"/runs/torchrun/checkpoints
