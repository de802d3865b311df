"""How opening a HowTo100M-layout corpus scales with its size: seconds and peak memory per process.

Synthesises N videos in HowTo100M's layouts (caption.json with `--captions` lines per video of
ASR-like text, and per-video 2D/3D .npy feature files of `--seconds` x `--feature-dim`), then, in a
fresh subprocess per N, opens the corpus as `decembert pretrain --data howto100m` does at start-up
(`open_corpus`: parse caption.json, clean every video's captions, read every feature header) and the
held-out split and the training dataset, and records wall seconds and the peak resident memory of
that process. Fits time and memory linearly in N and projects them to HowTo100M's 1.22M videos.

This measures the current in-memory path: the baseline for a persistent index (issue 17).

    python benchmarks/corpus_scale.py --videos 1000 5000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HOWTO100M_VIDEOS = 1_220_000
WORDS = "so now we cut the onion and then you want to stir the pan a little bit more okay next we pour oil".split()


def synthesise(root: Path, videos: int, captions: int, seconds: int, dim: int, seed: int = 0) -> None:
    """caption.json and features/{2d,3d}/{id}.npy for `videos` videos (ids v0000000 ...)."""
    rng = np.random.default_rng(seed)
    (root / "features" / "2d").mkdir(parents=True, exist_ok=True)
    (root / "features" / "3d").mkdir(parents=True, exist_ok=True)
    f2 = np.zeros((seconds, dim), dtype=np.float32)
    f3 = np.zeros((int(seconds * 1.5), dim), dtype=np.float32)
    data = {}
    for v in range(videos):
        video_id = f"v{v:07d}"
        starts = np.sort(rng.uniform(0, seconds - 5, size=captions)).round(2)
        texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(captions)]
        data[video_id] = {"start": starts.tolist(), "end": (starts + 4).round(2).tolist(), "text": texts}
        np.save(root / "features" / "2d" / f"{video_id}.npy", f2)
        np.save(root / "features" / "3d" / f"{video_id}.npy", f3)
    (root / "caption.json").write_text(json.dumps(data), encoding="utf-8")


MEASURE = """
import json, resource, sys, time
started = time.perf_counter()
from decembert_cli.config import DataConfig
from decembert_cli.data.corpus import PretrainDataset, open_corpus, split_videos
from decembert_cli.model import build_tokenizer
from decembert_cli.config import ModelConfig
imported = time.perf_counter()
root, dim = sys.argv[1], int(sys.argv[2])
config = DataConfig(root=root, use_dense=False, videos_csv="")
records, report = open_corpus("howto100m", config, (dim, dim), strict=False)
opened = time.perf_counter()
train, val = split_videos(records, config.val_videos)
data = PretrainDataset(train, build_tokenizer(ModelConfig(arch="tiny", init="none")), config, seed=0)
ready = time.perf_counter()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"videos_used": report.videos_used, "clips": int(len(data.clips)),
                  "import_s": imported - started, "open_s": opened - imported, "dataset_s": ready - opened,
                  "startup_s": ready - started, "peak_rss_mb": peak_mb}))
"""


def measure(root: Path, dim: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), str(dim)], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--captions", type=int, default=60, help="caption lines per video (HowTo100M: ~110 on average)")
    parser.add_argument("--seconds", type=int, default=300, help="feature rows per video (2D; 3D has 1.5x)")
    parser.add_argument("--feature-dim", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "corpus_scale_cpu2.json")
    args = parser.parse_args()

    rows = []
    for n in args.videos:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            synthesise(Path(tmp), n, args.captions, args.seconds, args.feature_dim)
            made = time.perf_counter() - started
            row = {"videos": n, "synthesis_s": round(made, 1), **measure(Path(tmp), args.feature_dim)}
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        print(json.dumps(rows[-1]), flush=True)
    result: dict = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "path": "in-memory (open_corpus)",
        "captions_per_video": args.captions,
        "feature_rows": args.seconds,
        "runs": rows,
    }
    if len(rows) >= 2:
        # the scan (open + split + dataset) grows with N; Python and library imports do not
        xs = [r["videos"] for r in rows]
        t0, t1 = _fit(xs, [r["open_s"] + r["dataset_s"] for r in rows])
        m0, m1 = _fit(xs, [r["peak_rss_mb"] for r in rows])
        imports = min(r["import_s"] for r in rows)
        result["fit"] = {
            "scan_s": [t0, t1],
            "peak_rss_mb": [m0, m1],
            "ms_per_video": round(1000 * t1, 3),
            "kb_per_video": round(1024 * m1, 2),
        }
        result["projection_1.22M"] = {
            "startup_min": round((imports + t0 + t1 * HOWTO100M_VIDEOS) / 60, 1),
            "peak_rss_gb": round((m0 + m1 * HOWTO100M_VIDEOS) / 1024, 1),
            "note": "linear extrapolation of the measured points: an estimate",
        }
        print(json.dumps(result["projection_1.22M"]))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
