"""Dense-captioning rate of Florence-2-large (random weights, the real architecture and sizes): frames/s
of `<DENSE_REGION_CAPTION>` generation at a fixed number of new tokens, per batch size, and the hours
that implies for HowTo100M (242M frames: 134,472 h at one frame every 2 s).

The weights do not change the cost; a fixed length (min = max new tokens) does the work a real model's
longest answer in the batch does. The config is Florence-2-large's (0.77B parameters: DaViT vision
tower 256/512/1024/2048 wide, 1,024-wide 12 + 12-layer BART text model), 768 x 768 pixels.

    python benchmarks/densecap_gpu.py --device cuda --json OUT.json
    python benchmarks/densecap_gpu.py --smoke      # CPU, a shrunk config: the script's own check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

HOWTO100M_FRAMES = 134_472 * 3600 / 2


def large_config(smoke: bool) -> object:
    from transformers import Florence2Config

    scale = 8 if smoke else 1
    vision = dict(
        embed_dim=[256 // scale, 512 // scale, 1024 // scale, 2048 // scale],
        num_heads=[8, 16, 32, 64] if not smoke else [1, 2, 4, 8],
        num_groups=[8, 16, 32, 64] if not smoke else [1, 2, 4, 8],
        depths=[1, 1, 9, 1] if not smoke else [1, 1, 1, 1],
        projection_dim=1024 // scale,
    )
    text = dict(
        vocab_size=51289,
        d_model=1024 // scale,
        encoder_layers=12 if not smoke else 1,
        decoder_layers=12 if not smoke else 1,
        encoder_attention_heads=16 // (scale // 2 or 1),
        decoder_attention_heads=16 // (scale // 2 or 1),
        encoder_ffn_dim=4096 // scale,
        decoder_ffn_dim=4096 // scale,
        max_position_embeddings=1024,
    )
    return Florence2Config(vision_config=vision, text_config=text, image_token_id=51288)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--beams", type=int, nargs="+", default=[3, 1], help="3: Florence-2's default")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.device, args.batch_sizes, args.new_tokens, args.size, args.beams = "cpu", [2], 4, 64, [1]
    from transformers import Florence2ForConditionalGeneration

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(large_config(args.smoke)).to(device, dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    with torch.inference_mode():  # the processor puts one image token per image feature before the prompt
        probe = torch.zeros(1, 3, args.size, args.size, device=device, dtype=dtype)
        image_tokens = int(model.get_image_features(probe).pooler_output.shape[1])
    text = [0, 4, 5, 6, 7, 8, 9, 2]  # a short task prompt's length
    prompt = torch.tensor([[config.image_token_id] * image_tokens + text], device=device)
    runs = []
    for beams in args.beams:
        for batch_size in args.batch_sizes:
            pixels = torch.randn(batch_size, 3, args.size, args.size, device=device, dtype=dtype)
            ids = prompt.expand(batch_size, -1)
            kwargs = dict(
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                num_beams=beams,
                do_sample=False,
                early_stopping=False,
            )
            try:
                with torch.inference_mode():
                    model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=2, num_beams=beams)  # warm-up
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    started = time.perf_counter()
                    out = model.generate(input_ids=ids, pixel_values=pixels, **kwargs)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                rate = batch_size / seconds
                row = {
                    "beams": beams,
                    "batch_size": batch_size,
                    "new_tokens": int(out.shape[1]) - 1,
                    "seconds": round(seconds, 3),
                    "frames_per_s": rate,
                    "howto100m_gpu_hours": HOWTO100M_FRAMES / rate / 3600,
                    "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                }
            except torch.OutOfMemoryError:
                row = {"beams": beams, "batch_size": batch_size, "error": "out of memory"}
                torch.cuda.empty_cache()
            runs.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "parameters": params,
        "image_size": args.size,
        "image_tokens": image_tokens,
        "dtype": str(dtype),
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
