"""How opening a HowTo100M-layout corpus scales with its size: the in-memory scan vs the persistent index.

For each N, synthesises N videos in HowTo100M's layouts (caption.json with `--captions` lines of
ASR-like text per video, per-video 2D/3D .npy feature files of `--seconds` rows), then measures,
each in a fresh process, in the same run:

- `memory`: the in-memory path (every caption source parsed, every video's captions cleaned,
  every feature header read, every caption tokenised) + held-out split + training dataset: seconds
  and peak RSS. This is what every start of a run paid before the index (without the tokenising);
- `build wN`: `decembert data index howto100m --workers N` from scratch: seconds and peak RSS;
- `index`: opening the built index + split + datasets, as `pretrain` does at start-up;
- `pretrain 1 rank` / `pretrain 2 ranks`: `decembert pretrain --data howto100m` with a tiny model and
  `train.max_steps=1` (start-up, one step, an 8-sample validation, a checkpoint), once alone and
  once under `torchrun --nproc-per-node 2` (gloo): wall seconds and the peak RSS of the largest process.

Peak RSS counts the index pages a process touched (memory-mapped, shared between processes through
the page cache, so it overstates what two ranks cost together). Lines are fitted in N and projected
to HowTo100M's 1.22M videos (an estimate from the measured points).

    python benchmarks/corpus_scale.py --videos 10000 100000

`--captions-only` is HowTo100M at its real size: caption.json written with HowTo100M's statistics
(`caption_json.synthesise`: ~99 lines a video, lognormal) and one tiny 2D and 3D feature file
hard-linked under every video's name (no feature data), then, without the in-memory path: the index
build from scratch (seconds; peak PSS summed over the build's processes, parent and workers, sampled
every 0.5 s, and the largest process' peak RSS), the index on disk, `pretrain` to its first step with
1 and 2 ranks (seconds, summed PSS), and one epoch's permutation of the clips (seconds, MB).

    python benchmarks/corpus_scale.py --captions-only --videos 100000 300000 1220000 --work /data/scale
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWTO100M_VIDEOS = 1_220_000
HOWTO100M_CLIPS = 136_000_000
LINKS_PER_FILE = 60_000
BYTES_PER_VIDEO = 5_000  # caption_json.synthesise writes about this much per video; videos= caps the count
WORDS = "so now we cut the onion and then you want to stir the pan a little bit more okay next we pour oil".split()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def synthesise(root: Path, videos: int, captions: int, seconds: int, dim: int, seed: int = 0) -> None:
    """caption.json and features/{2d,3d}/{id}.npy for `videos` videos (ids v0000000 ...)."""
    rng = np.random.default_rng(seed)
    (root / "features" / "2d").mkdir(parents=True, exist_ok=True)
    (root / "features" / "3d").mkdir(parents=True, exist_ok=True)
    f2 = _npy(np.zeros((seconds, dim), dtype=np.float32))
    f3 = _npy(np.zeros((int(seconds * 1.5), dim), dtype=np.float32))
    words = np.array(WORDS)
    with open(root / "caption.json", "w", encoding="utf-8") as out:
        out.write("{")
        for v in range(videos):
            video_id = f"v{v:07d}"
            starts = np.sort(rng.uniform(0, seconds - 5, size=captions)).round(2)
            lengths = rng.integers(4, 12, size=captions)
            picked = words[rng.integers(len(words), size=int(lengths.sum()))]
            texts = [" ".join(x) for x in np.split(picked, np.cumsum(lengths)[:-1])]
            entry = {"start": starts.tolist(), "end": (starts + 4).round(2).tolist(), "text": texts}
            out.write(("," if v else "") + json.dumps(video_id) + ":" + json.dumps(entry))
            (root / "features" / "2d" / f"{video_id}.npy").write_bytes(f2)
            (root / "features" / "3d" / f"{video_id}.npy").write_bytes(f3)
        out.write("}")


OPEN = """
import json, resource, sys, time
started = time.perf_counter()
from decembert_cli.config import DataConfig, ModelConfig
from decembert_cli.data.clip_table import ClipTable, split_videos
from decembert_cli.data.corpus import PretrainDataset
from decembert_cli.data.scan import DataReport
from decembert_cli.data.corpus_index import howto100m, open_index
from decembert_cli.model import build_tokenizer
tokenizer = build_tokenizer(ModelConfig(arch="tiny", init="none"))
imported = time.perf_counter()
path, root, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = DataConfig(root=root, use_dense=False, videos_csv="")
if path == "memory":
    records = howto100m(config, DataReport(), (dim, dim))
    scanned = time.perf_counter()
    table = ClipTable.from_records(records, tokenizer)
else:
    table, _, _ = open_index(howto100m, config, (dim, dim), tokenizer)
    scanned = time.perf_counter()
opened = time.perf_counter()
train, val = split_videos(table, config.val_videos)
data = PretrainDataset(table, tokenizer, config, videos=train, seed=0)
held_out = PretrainDataset(table, tokenizer, config, videos=val, seed=0)
data[0], data[len(data) - 1]
ready = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"videos": len(table), "clips": table.n_clips, "import_s": imported - started,
                  "scan_s": scanned - imported, "open_s": opened - imported, "dataset_s": ready - opened,
                  "startup_s": ready - started, "peak_rss_mb": peak}))
"""

# runs a command and reports its wall time, the peak RSS of its largest process (ranks and workers
# included) and the peak of the PSS summed over its process tree (shared pages counted once), sampled
WRAP = """
import json, os, resource, subprocess, sys, threading, time

def tree(root):
    parents = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [c for c, p in parents.items() if p == pid]
    return found

def pss(pids):
    # (PSS, its anonymous part: heap and the like, not pages of mapped files) summed over pids, MB
    total = anon = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                    elif line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                        anon += int(line.split()[1])
        except OSError:
            pass
    return total / 1024, anon / 1024

started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
peak = [0.0, 0.0]
def sample():
    while child.poll() is None:
        now = pss(tree(child.pid))
        peak[0], peak[1] = max(peak[0], now[0]), max(peak[1], now[1])
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
out = child.communicate()[0]
if child.returncode:
    sys.exit(out[-6000:])
print(json.dumps({"wall_s": time.perf_counter() - started, "peak_pss_sum_mb": peak[0], "peak_anon_pss_sum_mb": peak[1],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

PERMUTATION = """
import json, resource, sys, time
from decembert_cli.engine.sampler import StepBatches
clips = int(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
order = StepBatches(clips, global_batch=8, world=1, rank=0, accumulation=1, seed=0, start_step=0,
                    total_steps=1).permutation(0)
print(json.dumps({"seconds": time.perf_counter() - started, "clips": clips, "mb": order.nbytes / 2**20,
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _last_json(command: list[str]) -> dict:
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=_env())
    return json.loads(out.stdout.strip().splitlines()[-1])


def open_corpus_in(path: str, root: Path, dim: int) -> dict:
    return _last_json([sys.executable, "-c", OPEN, path, str(root), str(dim)])


def timed(command: list[str]) -> dict:
    return _last_json([sys.executable, "-c", WRAP, *command])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "decembert_cli", *args]


def _sets(root: Path, dim: int) -> dict[str, str]:
    return {
        "data.root": str(root),
        "data.use_dense": "false",
        "data.videos_csv": "",
        "model.feature_dim_2d": str(dim),
        "model.feature_dim_3d": str(dim),
    }


def _args(sets: dict[str, str]) -> list[str]:
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def pretrain_args(root: Path, dim: int, out: Path) -> list[str]:
    sets = {
        **_sets(root, dim),
        "data.workers": "0",
        "data.val_samples": "8",
        "model.arch": "tiny",
        "model.init": "none",
        "train.max_steps": "1",
        "train.batch_size": "8",
        "train.validate_every": "0",
    }
    return ["pretrain", "--data", "howto100m", "--out", str(out), *_args(sets)]


def measure(root: Path, dim: int, workers: list[int]) -> dict:
    row: dict = {"memory": open_corpus_in("memory", root, dim)}
    for n, w in enumerate(workers):
        rebuild = ["--rebuild"] if n else []
        build = timed(cli("data", "index", "howto100m", *_args(_sets(root, dim)), "--workers", str(w), *rebuild))
        manifest = json.loads((root / "decembert-index" / "manifest.json").read_text())
        row[f"build_w{w}"] = {**build, "build_s": manifest["build_seconds"]}
    row["index"] = open_corpus_in("index", root, dim)
    with tempfile.TemporaryDirectory() as runs:
        row["pretrain_1rank"] = timed(cli(*pretrain_args(root, dim, Path(runs) / "one")))
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "decembert_cli"]
        row["pretrain_2ranks"] = timed(torchrun + pretrain_args(root, dim, Path(runs) / "two"))
    return row


def synthesise_captions_only(root: Path, videos: int, seconds: int, dim: int) -> dict:
    """HowTo100M's caption.json at `videos` videos (its statistics) and one tiny feature file per stream
    hard-linked under every video's name; the file's counts."""
    from caption_json import synthesise as synthesise_captions

    size = int(videos * BYTES_PER_VIDEO)
    counts = synthesise_captions(root / "caption.json", size, videos=videos)
    for stream, rows in (("2d", seconds), ("3d", int(seconds * 1.5))):
        folder = root / "features" / stream
        folder.mkdir(parents=True, exist_ok=True)
        data = _npy(np.zeros((rows, dim), dtype=np.float16))
        for v in range(counts["videos"]):
            shared = root / "shared" / f"{stream}-{v // LINKS_PER_FILE}.npy"  # (ext4 allows 65,000 links a file)
            if v % LINKS_PER_FILE == 0:
                shared.parent.mkdir(exist_ok=True)
                shared.write_bytes(data)
            os.link(shared, folder / f"vid{v:08d}.npy")
    return counts


def measure_captions_only(root: Path, dim: int, workers: int) -> dict:
    build = timed(cli("data", "index", "howto100m", *_args(_sets(root, dim)), "--workers", str(workers)))
    index = root / "decembert-index"
    manifest = json.loads((index / "manifest.json").read_text())
    row: dict = {"build": {**build, "build_s": manifest["build_seconds"], "workers": workers}}
    row["index_disk_mb"] = sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) / 2**20
    row["index"] = open_corpus_in("index", root, dim)
    with tempfile.TemporaryDirectory() as runs:
        row["pretrain_1rank"] = timed(cli(*pretrain_args(root, dim, Path(runs) / "one")))
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "decembert_cli"]
        row["pretrain_2ranks"] = timed(torchrun + pretrain_args(root, dim, Path(runs) / "two"))
    row["permutation"] = _last_json([sys.executable, "-c", PERMUTATION, str(row["index"]["clips"])])
    return row


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x (through both points when there are two)."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def _rounded(value: object) -> object:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--captions", type=int, default=60, help="caption lines per video (HowTo100M: ~110 on average)")
    parser.add_argument(
        "--seconds",
        type=int,
        default=None,
        help="feature rows per video (2D; 3D has 1.5x); default 300, and 3600 with --captions-only, so that "
        "HowTo100M-long caption tracks keep their lines (300 s dropped 40%% of them)",
    )
    parser.add_argument("--feature-dim", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="index builds, from scratch each")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: results/corpus_scale_*)")
    parser.add_argument("--captions-only", action="store_true", help="HowTo100M's caption.json at scale, see above")
    parser.add_argument("--work", type=Path, default=None, help="--captions-only: folder for the corpora (kept)")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 3600 if args.captions_only else 300
    if args.captions_only:
        captions_only(args)
        return
    args.out = args.out or Path(__file__).parent / "results" / "corpus_scale_cpu2.json"

    rows = []
    for n in args.videos:
        tmp = Path(tempfile.mkdtemp(prefix="corpus-scale-"))
        try:
            started = time.perf_counter()
            synthesise(tmp, n, args.captions, args.seconds, args.feature_dim)
            row = {"videos": n, "synthesis_s": time.perf_counter() - started}
            row.update(measure(tmp, args.feature_dim, args.workers))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(_rounded(row))
        print(json.dumps(rows[-1]), flush=True)
    result: dict = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "captions_per_video": args.captions,
        "feature_rows": args.seconds,
        "runs": rows,
    }
    if len(rows) >= 2:
        xs = [r["videos"] for r in rows]
        per_video = {}
        for key, series in {
            "memory_startup_s": [r["memory"]["startup_s"] for r in rows],
            "memory_peak_rss_mb": [r["memory"]["peak_rss_mb"] for r in rows],
            "index_startup_s": [r["index"]["startup_s"] for r in rows],
            "index_peak_rss_mb": [r["index"]["peak_rss_mb"] for r in rows],
            "pretrain_2ranks_s": [r["pretrain_2ranks"]["wall_s"] for r in rows],
            "pretrain_2ranks_peak_rss_mb": [r["pretrain_2ranks"]["peak_rss_mb"] for r in rows],
            f"build_w{args.workers[-1]}_s": [r[f"build_w{args.workers[-1]}"]["build_s"] for r in rows],
        }.items():
            a, b = _fit(xs, series)
            per_video[key] = {"fixed": a, "per_video": b, "at_1.22M": a + b * HOWTO100M_VIDEOS}
        # an epoch's permutation of clips lives in each rank's sampler: int32 per clip (not in the corpus runs above)
        permutation_mb = HOWTO100M_CLIPS * 4 / 2**20
        result["projection_1.22M"] = {
            **_rounded(per_video),
            "sampler_permutation_mb_at_136M_clips": round(permutation_mb),
            "note": "linear fits through the measured points: estimates. The runs have 60 captions per video; "
            "HowTo100M has ~110, so clip-proportional terms (the sampler's permutation) are added separately",
        }
        print(json.dumps(result["projection_1.22M"], indent=1))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


def captions_only(args: argparse.Namespace) -> None:
    """Each size in its own folder under --work (a corpus already written there is reused; its index is
    built again from scratch); the results file is rewritten after each size."""
    out = args.out or Path(__file__).parent / "results" / "corpus_scale_captions_cpu2.json"
    work = args.work or Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    rows = []
    for n in args.videos:
        root = work / f"captions-{n}"
        done = root / "counts.json"
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            started = time.perf_counter()
            counts = synthesise_captions_only(root, n, args.seconds, args.feature_dim)
            done.write_text(json.dumps({**counts, "synthesis_s": time.perf_counter() - started}))
        shutil.rmtree(root / "decembert-index", ignore_errors=True)
        row = {**json.loads(done.read_text()), **measure_captions_only(root, args.feature_dim, args.workers[-1])}
        rows.append(_rounded(row))
        print(json.dumps(rows[-1]), flush=True)
        result = {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "mode": "captions only: HowTo100M's caption.json statistics, hard-linked tiny feature files",
            "feature_rows": args.seconds,
            "runs": rows,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
