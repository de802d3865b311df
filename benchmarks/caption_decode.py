"""Caption decoding speed: beam search with the prefix cache (keys/values kept) against re-encoding every step.

Contexts like a YouCook2 segment's (video tokens and dense captions, each sample its own lengths)
go through `decembert_cli.model.generation.generate` with the same beam size, twice: `use_cache`
(the context encoded once, each step one new token per beam) and without (context + caption
re-encoded at every step). Both give the same captions (tests/unit/test_generation.py); only time
is taken. To time full-length decoding, the end token is not allowed: every caption runs to
--max-length.

    python benchmarks/caption_decode.py                                 # small (MiniLM-L6 size), CPU
    python benchmarks/caption_decode.py --arch base --device cuda --videos 256
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="videos per generate call")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--video-tokens", type=int, default=30)
    parser.add_argument("--dense", type=int, default=16, help="dense captions in each context")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "caption_decode_cpu2.json")
    args = parser.parse_args()

    from decembert_cli.config import ModelConfig
    from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, collate
    from decembert_cli.model import build_encoder
    from decembert_cli.model.generation import Decoding, generate
    from decembert_cli.model.heads import MLMHead

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = ModelConfig(arch=args.arch, init="none", dropout=0.0)
    encoder, _ = build_encoder(cfg)
    encoder.to(device).eval()
    head = MLMHead(encoder.bert.config, encoder.word_embeddings).to(device).eval()
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(args.videos):
        t = int(rng.integers(args.video_tokens // 2, args.video_tokens + 1))
        dense = [
            TextSegment(rng.integers(1000, 20000, size=int(rng.integers(3, 8))).tolist(), TokenType.DENSE)
            for _ in range(args.dense)
        ]
        samples.append(EncoderSample(torch.randn(t, cfg.feature_dim_2d), torch.randn(t, cfg.feature_dim_3d), dense))
    allowed = torch.ones(head.bias.shape[0], dtype=torch.bool, device=device)
    eos = 102
    allowed[[0, 100, 101, 103, eos]] = False  # no end: full-length captions
    results: dict = {
        "device": str(device),
        "arch": args.arch,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "videos": args.videos,
        "beam": args.beam,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "mean_context_tokens": None,
    }
    lengths = []
    for use_cache in (True, False):
        decoding = Decoding(beam_size=args.beam, max_length=args.max_length, use_cache=use_cache)
        started = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, len(samples), args.batch_size):
                batch = collate(samples[first : first + args.batch_size], cls_id=101, sep_id=102, pad_id=0).to(device)
                lengths += (batch.video_mask.sum(1) + batch.text_mask.sum(1)).tolist()
                generate(encoder, head, batch, decoding, eos_id=eos, allowed=allowed)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results["cached" if use_cache else "recomputed"] = {
            "seconds": round(seconds, 3),
            "captions_per_s": round(args.videos / seconds, 3),
        }
        print(("cached" if use_cache else "recomputed"), results["cached" if use_cache else "recomputed"], flush=True)
    results["mean_context_tokens"] = round(float(np.mean(lengths)), 1)
    results["cache_speedup"] = round(results["recomputed"]["seconds"] / results["cached"]["seconds"], 2)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
