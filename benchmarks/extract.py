"""Feature extraction speed: the pipeline against a naive decode-everything-then-subsample baseline.

Writes N synthetic 640x360 30 fps videos (moving shapes, MPEG-4), then measures in one run:

- pipeline: `decembert_cli.features.pipeline.extract` (reader threads, time-grid sampling that
  converts only the frames it needs, batched inference across videos): wall time, video seconds
  and decoded frames per second;
- decode only: the same sampling with no model; inference only: the same number of images and
  clips through the backbones from memory;
- naive: read and convert every frame of a video into a list, pick the 1 s grid's frames by index,
  then run the models (no overlap), one video after another; its peak frame memory is reported.

    python benchmarks/extract.py                       # tiny random backbones (the demo's), CPU
    python benchmarks/extract.py --paper --device cuda # ResNet-152 + ResNeXt-101 (random weights)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_videos(
    folder: Path, count: int, seconds: int, fps: int = 30, size: tuple[int, int] = (640, 360)
) -> list[Path]:
    import cv2

    paths = []
    rng = np.random.default_rng(0)
    for v in range(count):
        path = folder / f"bench{v:02d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        base = np.zeros((size[1], size[0], 3), np.uint8)
        base[:] = rng.integers(40, 200, size=3)
        for f in range(seconds * fps):
            frame = base.copy()
            t = f / fps
            for s in range(3):
                x = int(size[0] / 2 + 200 * math.sin(t * (1 + s) + v))
                y = int(size[1] / 2 + 100 * math.cos(t * (1.5 + s)))
                cv2.circle(frame, (x, y), 30 + 10 * s, (60 * s, 255 - 60 * s, 128), -1)
            writer.write(frame)
        writer.release()
        paths.append(path)
    return paths


def naive(paths: list[Path], b2, b3, batch: int) -> tuple[float, int]:
    """Decode every frame into memory, then subsample, then infer; returns (seconds, peak frame bytes)."""
    import cv2

    from decembert_cli.data.video import resize_crop
    from decembert_cli.features.backbones import normalise_pixels

    peak = 0
    started = time.perf_counter()
    for path in paths:
        capture = cv2.VideoCapture(str(path))
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        peak = max(peak, sum(f.nbytes for f in frames))
        n = max(1, math.ceil(len(frames) / fps - 0.5))
        last = len(frames) - 1
        images = [resize_crop(frames[min(last, int((k + 0.5) * fps))], b2.size) for k in range(n)]
        clips = [
            np.stack(
                [
                    resize_crop(
                        frames[min(last, max(0, int((k + 0.5 + (j - (b3.frames - 1) / 2) / b3.fps) * fps)))], b3.size
                    )
                    for j in range(b3.frames)
                ]
            )
            for k in range(n)
        ]
        del frames
        with torch.inference_mode():
            for items, backbone in ((images, b2), (clips, b3)):
                for i in range(0, len(items), batch):
                    x = torch.from_numpy(np.stack(items[i : i + batch])).to(next(backbone.module.parameters()).device)
                    backbone.module(normalise_pixels(x, backbone)).float().cpu()
    return time.perf_counter() - started, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--paper", action="store_true", help="ResNet-152 (224 px) + ResNeXt-101 (112 px), random weights"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as extract-features on GPUs)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline (it takes as long again)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.bf16 else None

    from decembert_cli.data.video import Decoded, clip_grid, image_grid, open_video, sample
    from decembert_cli.features.backbones import build_2d, build_3d, normalise_pixels
    from decembert_cli.features.pipeline import ExtractOptions, extract

    device = torch.device(args.device)
    if args.paper:
        b2, b3 = build_2d("resnet152", "random"), build_3d("resnext101", "random")
    else:
        b2, b3 = build_2d("resnet18", "random", size=112), build_3d("resnext3d-tiny", "random", size=64)
    for b in (b2, b3):
        b.module.to(device)
    results: dict = {
        "machine": {"cpu_threads": torch.get_num_threads(), "device": str(device), "python": platform.python_version()},
        "backbones": {"2d": f"{b2.name} {b2.size}px", "3d": f"{b3.name} {b3.size}px {b3.frames}f"},
        "videos": args.videos,
        "seconds_each": args.seconds,
        "source": "640x360, 30 fps, MPEG-4",
        "dtype": "bf16" if args.bf16 else "fp32",
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_videos(Path(tmp), args.videos, args.seconds)
        total_seconds = args.videos * args.seconds

        grids = [image_grid(b2.size), clip_grid(b3.size, b3.frames, b3.fps)]
        started, items, frames = time.perf_counter(), [0, 0], 0
        for path in paths:
            video, decoded = open_video(path), Decoded()
            for item in sample(video, grids, decoded):
                items[item.stream] += 1
            frames += decoded.frames
            video.close()
        decode_only = time.perf_counter() - started

        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for backbone, count, shape in (
                (b2, items[0], (b2.size, b2.size, 3)),
                (b3, items[1], (b3.frames, b3.size, b3.size, 3)),
            ):
                for i in range(0, count, args.batch_size):
                    n = min(args.batch_size, count - i)
                    x = torch.randint(0, 255, (n, *shape), dtype=torch.uint8, device=device)
                    backbone.module(normalise_pixels(x, backbone)).float().cpu()
        infer_only = time.perf_counter() - started

        options = ExtractOptions(
            out=Path(tmp) / "store", batch_size=args.batch_size, readers=args.readers, device=device, autocast=dtype
        )
        summary = extract(paths, b2, b3, options)
        naive_s, naive_peak = (float("nan"), 0) if args.no_naive else naive(paths, b2, b3, args.batch_size)

    results.update(
        decoded_frames=frames,
        features_per_stream=items[0],
        pipeline_s=round(summary.wall_s, 3),
        pipeline_video_seconds_per_s=round(total_seconds / summary.wall_s, 2),
        pipeline_decoded_frames_per_s=round(frames / summary.wall_s, 1),
        decode_only_s=round(decode_only, 3),
        inference_only_s=round(infer_only, 3),
        naive_s=round(naive_s, 3),
        naive_peak_frame_memory_mb=round(naive_peak / 2**20, 1),
        speedup_vs_naive=round(naive_s / summary.wall_s, 2),
        overlap=round((decode_only + infer_only) / summary.wall_s, 2),
    )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
