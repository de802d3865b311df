"""Reading HowTo100M's caption.json without holding it: the candidates, on one synthetic file, same run.

caption.json is one JSON object over 1.22M videos (~136M caption lines). This writes a file of
`--size-gb` with HowTo100M's statistics (DATA_FORMATS.md: lines per video lognormal with mean ~99
and median ~76, 1-16 words a line, mean 4.5; ~4.3 s a line; ~0.3% of lines with non-ASCII text), then
measures each reader in a fresh process (seconds, MB/s, peak RSS):

- `json.load`: the whole file parsed at once (what the index build did before it streamed);
- `scan`: `decembert_cli.io.scan_json_object`, the standard library's C scanner (`raw_decode`) over
  16 MiB pieces: every value parsed and checked, only (id, byte offset, length) kept (`JsonCaptions`'s
  opening);
- `scan + get all`: `JsonCaptions` opened, then every video's entry read back and parsed by offset
  (what a build does in all: the second read runs in the build's worker processes);
- `ijson`: ijson's C backend (yajl2_c), `kvitems` over the top-level object, each entry built as a
  Python object and dropped; only where ijson is importable (`--ijson-path` adds a folder to sys.path,
  e.g. one filled by `pip install --target DIR ijson`): it is not a dependency of decembert.

    python benchmarks/caption_json.py --work /tmp/cj --size-gb 1 --ijson-path /tmp/ijson-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "so now we cut the onion and then you want to stir the pan a little bit more okay next we pour oil "
    "into bowl add salt pepper garlic butter let it cook for about five minutes until golden brown"
).split()
ODD = ["½", "fjällräven", "córdoba's", "jalapeño", "crème"]


def synthesise(path: Path, size: int, seed: int = 0, videos: int | None = None) -> dict[str, float]:
    """A caption.json of about `size` bytes with HowTo100M's statistics (or of exactly `videos` videos); its
    counts."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    count = lines = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        while (videos is None or count < videos) and (videos is not None or out.tell() < size):
            n = int(np.clip(rng.lognormal(np.log(76), 0.72), 11, 693))
            per_line = np.clip(rng.poisson(3.5, n) + 1, 1, 16)
            picked = words[rng.integers(len(words), size=int(per_line.sum()))].tolist()
            cuts = np.cumsum(per_line)[:-1].tolist()
            texts = [" ".join(picked[a:b]) for a, b in zip([0, *cuts], [*cuts, len(picked)], strict=True)]
            for k in np.flatnonzero(rng.random(n) < 0.003):
                texts[k] += " " + ODD[int(k) % len(ODD)]
            seconds = np.clip(rng.lognormal(np.log(3.1), 0.8, n), 0.3, 236)
            start = np.concatenate([[0.0], np.cumsum(seconds)[:-1]]).round(2)
            entry = {"start": start.tolist(), "end": (start + seconds).round(2).tolist(), "text": texts}
            out.write(("," if count else "") + json.dumps(f"vid{count:08d}") + ":" + json.dumps(entry))
            count += 1
            lines += n
        out.write("}")
    return {"videos": count, "lines": lines, "bytes": path.stat().st_size}


# (imports, work): only the work is timed
READERS = {
    "json.load": (
        "import json",
        """
with open(path, encoding="utf-8") as f:
    data = json.load(f)
count = len(data)
""",
    ),
    "scan": (
        "from decembert_cli.data.howto100m import JsonCaptions",
        "count = len(JsonCaptions(path).ids())",
    ),
    "scan + get all": (
        "from decembert_cli.data.howto100m import JsonCaptions",
        """
source = JsonCaptions(path)
count = sum(1 for v in source.ids() if len(source.get(v)) >= 0)
""",
    ),
    "ijson": (
        "import ijson",
        """
with open(path, "rb") as f:
    count = sum(1 for _ in ijson.kvitems(f, "", use_float=True))
""",
    ),
}

WRAP = """
import json, resource, sys, time
sys.path[:0] = [p for p in sys.argv[2:] if p]
path = sys.argv[1]
{imports}
started = time.perf_counter()
{work}
print(json.dumps({{"seconds": time.perf_counter() - started, "count": count,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(reader: str, path: Path, extra: list[str]) -> dict[str, float] | str:
    imports, work = READERS[reader]
    code = WRAP.format(imports=imports, work=work)
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(ROOT), *extra], capture_output=True, text=True, check=False
    )
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the synthetic caption.json (reused)")
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--ijson-path", default="", help="a folder holding ijson (e.g. from pip install --target)")
    parser.add_argument("--readers", nargs="+", default=list(READERS), choices=list(READERS))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "caption_json_cpu2.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "caption.json"
    size = int(args.size_gb * 1e9)
    counts_file = args.work / "counts.json"
    if not (path.is_file() and counts_file.is_file() and json.loads(counts_file.read_text())["target"] == size):
        began = time.perf_counter()
        counts = {**synthesise(path, size), "target": size}
        counts_file.write_text(json.dumps(counts))
        print(f"wrote {path} in {time.perf_counter() - began:.0f} s: {counts}", flush=True)
    counts = json.loads(counts_file.read_text())
    results = {}
    for reader in args.readers:
        result = measure(reader, path, [args.ijson_path])
        if isinstance(result, dict):
            result["mb_per_s"] = counts["bytes"] / 1e6 / result["seconds"]
            assert result["count"] == counts["videos"], (reader, result)
        results[reader] = result
        print(f"{reader}: {result}", flush=True)
    record = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "file": {k: counts[k] for k in ("videos", "lines", "bytes")},
        "readers": results,
        "note": "each reader in a fresh process (imports not timed); peak RSS of that process; one core",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
