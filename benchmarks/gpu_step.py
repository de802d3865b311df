"""Pre-training step throughput and MFU: BERT-base, MLM + VTM + constrained loss, per batch size, sequence
length and mode (eager attention, fused attention, fused + torch.compile), in one process.

Each configuration: a random batch of the shape (benchmarks share data/sample/batches.py's generator),
AdamW (fused on CUDA), bf16 autocast, `--warmup` steps then `--steps` timed ones. Reports steps/s,
samples/s, MFU (useful FLOPs from decembert_cli.model.flops over the device's dense peak), the
padding share and peak memory; on CUDA also whether a step runs without a host synchronisation
(torch.cuda.set_sync_debug_mode("error")) and a profile of the best configuration (top kernels).

    python benchmarks/gpu_step.py --device cuda --arch base --tokenizer .gpu_assets/tokenizer --json OUT.json
    python benchmarks/gpu_step.py --smoke          # CPU, tiny model: the script's own check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

SHAPES = {  # name: (video tokens, neighbours k, ASR words per caption, dense captions) -> ~211 / ~311 tokens
    "L211": (100, 1, 6, 12),
    "L311": (100, 2, 6, 25),
}


def build(args: argparse.Namespace, mode: str) -> torch.nn.Module:
    from decembert_cli.config import Config, load_config
    from decembert_cli.model import build_pretraining_model

    attention = "eager" if mode == "eager" else "fused"
    overrides = [f"model.arch={args.arch}", f"model.attention={attention}", "model.dropout=0.0", "model.init=none"]
    overrides += [f"model.tokenizer={args.tokenizer}"]
    torch.manual_seed(0)
    return build_pretraining_model(load_config(Config, None, overrides))


def batch_of(args: argparse.Namespace, shape: str, batch_size: int) -> Any:
    from decembert_cli.config import ModelConfig
    from decembert_cli.data.sample.batches import BatchShape, random_batch
    from decembert_cli.model import build_tokenizer

    video, k, words, dense = SHAPES[shape]
    tokenizer = build_tokenizer(ModelConfig(tokenizer=args.tokenizer))
    spec = BatchShape(
        batch_size=batch_size,
        video_tokens=(video, video),
        neighbours=k,
        caption_words=(words, words + 6),
        dense_captions=dense,
    )
    return random_batch(tokenizer, spec, seed=0)


def measure(args: argparse.Namespace, mode: str, shape: str, batch_size: int, device: torch.device) -> dict:
    from decembert_cli.config import TrainConfig
    from decembert_cli.engine.optim import build_optimizer
    from decembert_cli.model.flops import ModelShape, batch_flops, peak_flops

    model = build(args, mode).to(device).train()
    cpu_batch = batch_of(args, shape, batch_size)
    batch = cpu_batch.to(device)
    optimizer = build_optimizer(model, TrainConfig(), fused=device.type == "cuda")
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    forward = torch.compile(model, dynamic=False) if mode == "fused+compile" else model

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = forward(batch).losses["total"]
        loss.backward()
        optimizer.step()
        return loss.detach()

    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - started
    sync_free = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            sync_free = "yes"
        except RuntimeError as exc:
            sync_free = f"no: {str(exc).splitlines()[0][:200]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    seconds = (time.perf_counter() - started) / args.steps
    flops, tokens = batch_flops(ModelShape.of(model.encoder.bert.config, 2048, 2048), cpu_batch)
    positions = batch_size * (cpu_batch.video_mask.shape[1] + cpu_batch.text_ids.shape[1])
    peak = peak_flops(device, dtype, args.peak_tflops)
    return {
        "mode": mode,
        "shape": shape,
        "batch_size": batch_size,
        "sequence_length": int(cpu_batch.video_mask.shape[1] + cpu_batch.text_ids.shape[1]),
        "padding_share": round(1 - tokens / positions, 4),
        "steps_per_s": 1 / seconds,
        "samples_per_s": batch_size / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "warmup_s": round(warmup_s, 1),
        "sync_free_step": sync_free,
        "loss": float(loss),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile(args: argparse.Namespace, best: dict, device: torch.device) -> list[dict]:
    """Top kernels (self device time) of 3 steps of the best configuration."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from decembert_cli.config import TrainConfig
    from decembert_cli.engine.optim import build_optimizer

    model = build(args, "fused").to(device).train()
    batch = batch_of(args, best["shape"], best["batch_size"]).to(device)
    optimizer = build_optimizer(model, TrainConfig(), fused=device.type == "cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for i in range(5):
        if i == 2:
            prof = torch_profile(activities=activities)
            prof.__enter__()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            model(batch).losses["total"].backward()
        optimizer.step()
    sync(device)
    prof.__exit__(None, None, None)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    return [{"name": e.key[:120], "share": round(getattr(e, key) / total, 4), "calls": e.count} for e in events[:20]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="base", choices=["base", "small", "tiny"])
    parser.add_argument("--tokenizer", default="auto", help="model.tokenizer (a folder where the package is absent)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["eager", "fused"])
    parser.add_argument("--compile-batch", type=int, default=128, help="fused+compile runs at this batch size only")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak (0: from its name)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, one small batch: check the script")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.device, args.arch, args.dtype, args.batch_sizes, args.steps, args.warmup = "cpu", "tiny", "fp32", [4], 1, 1
        args.peak_tflops, args.compile_batch = args.peak_tflops or 1.0, 0
    device = torch.device(args.device)
    runs = []
    for shape in args.shapes:
        for batch_size in args.batch_sizes:
            modes = list(args.modes) + (["fused+compile"] if batch_size == args.compile_batch else [])
            for mode in modes:
                try:
                    row = measure(args, mode, shape, batch_size, device)
                except torch.OutOfMemoryError:
                    row = {"mode": mode, "shape": shape, "batch_size": batch_size, "error": "out of memory"}
                    torch.cuda.empty_cache()
                runs.append(row)
                print(json.dumps(row), flush=True)
    ok = [r for r in runs if "error" not in r]
    best = max(ok, key=lambda r: r["samples_per_s"])
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "arch": args.arch,
        "dtype": args.dtype,
        "runs": runs,
        "best": best,
        "profile_of_best_fused": profile(args, best, device),
    }
    print(
        f"best: {best['mode']} {best['shape']} batch {best['batch_size']}: {best['samples_per_s']:.0f} samples/s, "
        f"MFU {best['mfu']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
