"""CUDA check: the fused constrained loss and its gradients equal the eager reference on the GPU.

Runs fp32 (tight tolerance) and bf16 autocast (loose, reported) on a randomly initialised encoder.

    python benchmarks/cuda_check.py --arch small --tokenizer DIR
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    import torch

    from decembert_cli.config import Config, load_config
    from decembert_cli.data.sample.batches import BatchShape, random_batch
    from decembert_cli.model import build_pretraining_model, build_tokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="small")
    parser.add_argument("--tokenizer", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    overrides = [f"model.arch={args.arch}", "model.init=none", f"model.tokenizer={args.tokenizer}", "model.dropout=0.0"]
    cfg = load_config(Config, None, overrides)
    torch.manual_seed(0)
    model = build_pretraining_model(cfg).to(dev).eval()
    with torch.no_grad():  # sharpen the random attention so u is far from uniform
        for layer in model.encoder.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(8.0)
    tokenizer = build_tokenizer(cfg.model)
    batch = random_batch(
        tokenizer, BatchShape(batch_size=args.batch_size, neighbours=3, video_tokens=(20, 100)), seed=1
    ).to(dev)
    report = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__}
    params = [p for p in model.parameters() if p.requires_grad]
    for dtype in (None, torch.bfloat16):
        results = {}
        for eager in (False, True):
            model.encoder.eager = eager
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(batch)
            grads = torch.autograd.grad(out.losses["constrained"], params, allow_unused=True)
            results[eager] = (out.losses, grads)
        (lf, gf), (le, ge) = results[False], results[True]
        loss_diff = max(abs(lf[k].item() - le[k].item()) for k in lf)
        pairs = [(a.float().flatten(), b.float().flatten()) for a, b in zip(gf, ge) if a is not None and b is not None]
        diff = torch.cat([a - b for a, b in pairs]).norm()
        rel = (diff / torch.cat([b for _, b in pairs]).norm()).item()  # over all parameters together
        name = "bf16" if dtype else "fp32"
        report[name] = {
            "constrained_fused": lf["constrained"].item(),
            "constrained_eager": le["constrained"].item(),
            "max_loss_abs_diff": loss_diff,
            "max_grad_rel_diff": rel,
        }
    model.encoder.eager = False
    report["fp32_ok"] = report["fp32"]["max_loss_abs_diff"] < 1e-4 and report["fp32"]["max_grad_rel_diff"] < 1e-3
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
