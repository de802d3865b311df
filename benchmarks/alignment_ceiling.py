"""How well can a clip's true caption be found among its candidates on the sample corpus? Rules that know the truth.

Pre-training's validation reports the alignment accuracy of the constrained loss's attention shares u: how often
the candidate caption (s_i-1, s_i, s_i+1, shuffled) with the highest u is the one that truly describes the clip,
next to the baseline "always the clip's own caption s_i". The sample corpus misaligns part of the ASR on
purpose (a caption may describe a neighbouring segment, or nothing). This script draws the validation samples
exactly as `decembert pretrain` does (the library's dataset, the run's seed, held-out videos) and scores, on the
same samples as the metric (positives with one known true candidate), rules that use what the generator knows:

- `own caption`: always s_i (the validation's baseline; recomputed here as a check);
- `video oracle`: the candidate naming most of the objects and actions the clip's seconds show (perfect
  perception of both streams), ties broken towards s_i, else the earliest candidate;
- `objects only (2D oracle)`: the same with objects alone;
- `text: dense captions`: the candidate naming most objects that the clip's dense captions name (what the text
  alone can tell; dense captions describe the clip's own frames), ties as above.

    python benchmarks/alignment_ceiling.py --corpus /tmp/t6/corpus --dim 512 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vtm_ceiling import _shown  # noqa: E402  (the objects and actions under a clip's seconds)


def choose(scores: list[int], own: int) -> int:
    """The candidate with the highest score; ties go to the clip's own caption, else the first."""
    best = max(scores)
    return own if scores[own] == best else scores.index(best)


def main() -> None:
    from decembert_cli.config import Config, load_config
    from decembert_cli.data.batch import TokenType
    from decembert_cli.data.clip_table import split_videos
    from decembert_cli.data.corpus import VAL_EPOCH, PretrainDataset, open_corpus, validation_indices
    from decembert_cli.data.sample.corpus import plans as sample_plans
    from decembert_cli.data.sample.vocabulary import ACTIONS, OBJECTS
    from decembert_cli.model import build_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a sample corpus (table6_sample.py's WORK/corpus)")
    parser.add_argument("--dim", type=int, default=512, help="its feature width")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="the runs' seeds (they draw the samples)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set (e.g. data.neighbours)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "alignment_ceiling.json")
    args = parser.parse_args()

    changes = [f"data.root={args.corpus}", f"model.feature_dim_2d={args.dim}", f"model.feature_dim_3d={args.dim}"]
    results: dict[str, Any] = {}
    for seed in args.seeds:
        config = load_config(Config, "demo", [*changes, f"seed={seed}", *args.extra])
        tokenizer = build_tokenizer(config.model)
        words = {int(tokenizer.convert_tokens_to_ids(w)): w for w in (*OBJECTS, *ACTIONS)}
        dims = (config.model.feature_dim_2d, config.model.feature_dim_3d)
        table, _report = open_corpus("sample", config.data, dims, tokenizer, strict=False)
        _train, val_videos = split_videos(table, config.data.val_videos)
        data = PretrainDataset(
            table, tokenizer, config.data, videos=val_videos, seed=seed, max_video_tokens=config.model.max_video_tokens
        )
        plans = sample_plans(args.corpus)
        right = {"own caption": 0, "video oracle": 0, "objects only (2D oracle)": 0, "text: dense captions": 0}
        known = 0
        for index in validation_indices(len(data), config.data.val_samples):
            sample, info = data.build(VAL_EPOCH, index)
            if info.negative is not None or sample.aligned < 0:
                continue
            known += 1
            row = int(data.videos[info.video])
            objects, actions = _shown(plans[data.video_id(info.video)], table.window(row, info.clip))
            candidates = [s for s in sample.segments if s.kind == TokenType.ASR]
            named = [{words.get(t) for t in (s.original or s.ids)} - {None} for s in candidates]
            dense = set().union(
                *({words.get(t) for t in (s.original or s.ids)} for s in sample.segments if s.kind == TokenType.DENSE)
            ) & set(OBJECTS)
            own, truth = sample.own_candidate, sample.aligned
            picks = {
                "own caption": own,
                "video oracle": choose([len(n & (objects | actions)) for n in named], own),
                "objects only (2D oracle)": choose([len(n & objects) for n in named], own),
                "text: dense captions": choose([len(n & dense) for n in named], own),
            }
            for name, pick in picks.items():
                right[name] += int(pick == truth)
        found = {name: 100.0 * r / max(known, 1) for name, r in right.items()}
        found["samples scored"] = known
        results[f"seed {seed}"] = found
        print(f"seed {seed}: {json.dumps(found, indent=1)}", flush=True)
    setting = ", ".join(["demo", *args.extra])
    out: dict[str, Any] = {"platform": platform.platform(), "settings": {}}
    if args.json.exists():  # keep the settings measured by earlier invocations
        out["settings"] = json.loads(args.json.read_text()).get("settings", {})
    corpus = json.loads((args.corpus / "meta.json").read_text())["arguments"]
    out["settings"][setting] = {"corpus": corpus, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
