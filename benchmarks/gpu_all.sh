#!/usr/bin/env bash
# Every GPU measurement of issue 19 in one run: at most ~8 minutes (455 s of parts + install) on one H200 with 16 cores (each part
# has its own time limit; a part that runs over is cut and the others still run). Needs no network:
# run benchmarks/gpu_assets.sh first on a machine with PyPI, then carry .whl and .gpu_assets, e.g.
#   device run: command "bash benchmarks/gpu_all.sh", carry [".whl", ".gpu_assets"]
# The machine must have PyTorch, transformers, timm, OpenCV, typer, rich and pyyaml (the H200 image has).
# Results: $OUT/*.json (one per part) and $OUT/summary.txt; logs of every part in $OUT/logs.txt.
#   (a) pre-training step, BERT-base bf16, batch 64/128/256 x ~211/~311 tokens, eager / fused / fused+compile
#       (compile at batch 128), MFU, peak memory, whether a step is free of host synchronisation, a profile
#   (c) evaluate msrvtt-retrieval's full cross-encoder on a 1,000 x 1,000 gallery (10^6 pairs), seconds
#   (b) the whole `pretrain` loop on a synthetic corpus with 0/4/8/12 loader workers: samples/s, data wait
#   (d) extract-features ResNet-152 + ResNeXt-101 (random weights, real sizes), bf16: video-seconds/s, GPU use
#   (e) Florence-2-large (random weights), dense-region captioning at 256 new tokens, batch 8/32: frames/s
set -uo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu_all}
mkdir -p "$OUT"
TOK=.gpu_assets/tokenizer
START=$(date +%s)
note() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT/summary.txt"; }
part() {  # part NAME SECONDS command...: run with a time limit, its output appended to logs.txt
    local name=$1 limit=$2
    shift 2
    echo "=== $name" >> "$OUT/logs.txt"
    timeout "$limit" "$@" >> "$OUT/logs.txt" 2>&1
    note "$name: exit $? (limit $limit s)"
}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$OUT/logs.txt" 2>&1 || note "wheels: install failed"
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/logs.txt" 2>&1 || note "project: install failed"
note "$(python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())')"

part a-step 165 python3 benchmarks/gpu_step.py --device cuda --arch base --tokenizer $TOK \
    --batch-sizes 64 128 256 --shapes L211 L311 --modes eager fused --compile-batch 128 --json "$OUT/step_h200.json"
part c-retrieval 90 python3 benchmarks/retrieval_eval.py --device cuda --arch base --tokenizer $TOK --dtype bf16 \
    --clips 5000 --batch-size 1024 --rerank-k 10 --naive-pairs 200 --out "$OUT/retrieval_h200.json"
part b-loop 95 python3 benchmarks/pretrain_throughput.py --device cuda --arch base --init none --tokenizer $TOK \
    --batch-size 128 --steps 30 --videos 96 --workers 0 4 8 12 --set train.bucket_batches=16 \
    --json "$OUT/loop_h200.json"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > /tmp/util.txt 2>/dev/null &
SMI=$!
part d-extract 50 python3 benchmarks/extract.py --paper --bf16 --no-naive --device cuda --videos 8 --seconds 60 \
    --readers 12 --batch-size 64 --json "$OUT/extract_h200.json"
kill $SMI 2>/dev/null
part e-densecap 55 python3 benchmarks/densecap_gpu.py --device cuda --batch-sizes 8 32 --beams 3 1 \
    --json "$OUT/densecap_h200.json"

python3 - "$OUT" >> "$OUT/summary.txt" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None
util = [float(x) for x in Path("/tmp/util.txt").read_text().split() if x.strip()] if Path("/tmp/util.txt").exists() else []
if (step := load("step_h200.json")):
    for r in step["runs"]:
        print("a", r.get("mode"), r.get("shape"), r.get("batch_size"), r.get("error") or
              f"{r['samples_per_s']:.0f} samples/s, MFU {100 * (r['mfu'] or 0):.1f}%, {r['peak_memory_gb'] or 0:.1f} GB, "
              f"padding {100 * r['padding_share']:.1f}%, sync-free: {r['sync_free_step']}")
    print("a profile:", [(p["name"][:40], p["share"]) for p in step["profile_of_best_fused"][:8]])
if (ret := load("retrieval_h200.json")):
    print("c retrieval:", ret["batched"], "rerank:", ret["rerank"])
if (loop := load("loop_h200.json")):
    for r in loop["results"]:
        print("b workers", r["workers"], f"{r['samples_per_s']:.0f} samples/s, data wait {100 * r['data_wait']:.1f}%,",
              f"MFU {r.get('mfu')}")
if (ex := load("extract_h200.json")):
    print("d extract:", ex["pipeline_video_seconds_per_s"], "video-s/s; GPU utilisation mean",
          round(sum(util) / len(util), 1) if util else None, "%;", "HowTo100M hours:",
          round(134_472 * 3600 / ex["pipeline_video_seconds_per_s"] / 3600, 1))
if (dc := load("densecap_h200.json")):
    for r in dc["runs"]:
        print("e densecap", r)
PY
note "done"
