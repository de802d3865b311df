"""Training steps/s and peak memory: fused attention (SDPA + loss blocks) vs the eager baseline.

Both modes run the same config, batch and losses (MLM + VTM + lambda * constrained attention loss);
the eager baseline materialises the full (L x L) attention logits of every layer and head to get the
loss blocks. Each mode runs in its own process so that peak memory is its own.

    python benchmarks/encoder_step.py                      # CPU defaults (small encoder)
    python benchmarks/encoder_step.py --arch base --device cuda --batch-size 32 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    from decembert_cli.config import Config, load_config
    from decembert_cli.data.sample.batches import BatchShape, random_batch
    from decembert_cli.model import build_pretraining_model, build_tokenizer

    torch.manual_seed(0)
    overrides = [f"model.arch={args.arch}", f"model.attention={args.mode}", "model.dropout=0.0"]
    overrides += [f"model.init={args.init}", f"model.tokenizer={args.tokenizer}"]
    cfg = load_config(Config, None, overrides)
    device = torch.device(args.device)
    model = build_pretraining_model(cfg).to(device).train()
    tokenizer = build_tokenizer(cfg.model)
    shape = BatchShape(
        batch_size=args.batch_size,
        video_tokens=(args.video_tokens, args.video_tokens),
        neighbours=args.neighbours,
        caption_words=(args.caption_words, args.caption_words + 6),
        dense_captions=args.dense_captions,
    )
    batch = random_batch(tokenizer, shape, seed=0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), weight_decay=0.01)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(batch)
        out.losses["total"].backward()
        optimizer.step()
        return out.losses["constrained"].item()

    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        first = {k: v.item() for k, v in model(batch).losses.items()}
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "mode": args.mode,
        "steps_per_s": args.steps / seconds,
        "peak_memory_mb": peak_mb,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "sequence_length": int(batch.video_mask.shape[1] + batch.text_ids.shape[1]),
        "first_losses": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small", choices=["base", "small", "tiny"])
    parser.add_argument("--init", default="none", help="model.init (none: random weights, no download)")
    parser.add_argument(
        "--tokenizer", default="auto", help="model.tokenizer (a dir with vocab.txt where the package is absent)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--video-tokens", type=int, default=100)
    parser.add_argument("--neighbours", type=int, default=1)
    parser.add_argument("--caption-words", type=int, default=6)
    parser.add_argument("--dense-captions", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=["fused", "eager"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return

    results = {}
    for mode in ("eager", "fused"):
        child = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        child = [a for i, a in enumerate(child) if not (a == "--json" or (i > 0 and child[i - 1] == "--json"))]
        proc = subprocess.run(child, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            sys.exit(f"{mode} run failed:\n{proc.stderr}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    eager, fused = results["eager"], results["fused"]
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("mode", "json")},
        "eager": eager,
        "fused": fused,
        "speedup_fused_over_eager": fused["steps_per_s"] / eager["steps_per_s"],
        "memory_ratio_fused_over_eager": fused["peak_memory_mb"] / eager["peak_memory_mb"],
        "first_step_loss_abs_diff": max(
            abs(fused["first_losses"][k] - eager["first_losses"][k]) for k in fused["first_losses"]
        ),
    }
    print(
        f"encoder training step, {args.arch}, batch {args.batch_size}, sequence length {fused['sequence_length']}, "
        f"{args.device} {args.dtype}"
    )
    for mode in ("eager", "fused"):
        r = results[mode]
        print(
            f"  {mode:5s}: {r['steps_per_s']:.3f} steps/s, "
            f"peak memory {r['peak_memory_mb']:.0f} MB ({r['memory_kind']})"
        )
    print(
        f"  fused / eager: {summary['speedup_fused_over_eager']:.2f}x steps/s, "
        f"{summary['memory_ratio_fused_over_eager']:.2f}x memory; "
        f"losses agree to {summary['first_step_loss_abs_diff']:.1e}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
