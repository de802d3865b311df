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

Each rule reads the text before masking and, in `as validated (masked)`, the text as the validation feeds it
to the model: MLM's masks (concept masking hides a word at every mention) take part of the cue away.

With `--runs`, each pre-training run folder's final model is also validated both ways (the library's own
validation, the run's config and seed; unmasked: `data.mask_prob` 0), so the model's u stands beside the rules.

    python benchmarks/alignment_ceiling.py --corpus /tmp/t6/corpus --dim 512 --seeds 0 1 \
        --runs /tmp/t6/pretrain-full-seed0 /tmp/t6/pretrain-full-seed1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_truth import arguments, open_sample, run_validator, save  # noqa: E402


def choose(scores: list[int], own: int) -> int:
    """The candidate with the highest score; ties go to the clip's own caption, else the first."""
    best = max(scores)
    return own if scores[own] == best else scores.index(best)


VIEWS = ("unmasked", "as validated (masked)")
RULES = ("own caption", "video oracle", "objects only (2D oracle)", "text: dense captions")


def named(sample: Any, kind: Any, words: dict[int, str], view: str) -> list[set[str]]:
    """The object and action words of each of the sample's text segments of `kind`, in `view`."""
    text = (lambda s: s.original or s.ids) if view == "unmasked" else (lambda s: s.ids)
    return [{words[t] for t in text(s) if t in words} for s in sample.segments if s.kind == kind]


def main() -> None:
    from decembert_cli.data.batch import TokenType
    from decembert_cli.data.corpus import VAL_EPOCH, validation_indices
    from decembert_cli.data.sample.vocabulary import OBJECTS

    args = arguments(
        __doc__, "alignment_ceiling.json", "the runs' seeds (they draw the samples)", runs=True
    ).parse_args()
    results: dict[str, Any] = {}
    for seed in args.seeds:
        corpus = open_sample(args, seed)
        data = corpus.dataset(corpus.val_videos)

        right = {view: dict.fromkeys(RULES, 0) for view in VIEWS}
        known = 0
        for index in validation_indices(len(data), corpus.config.data.val_samples):
            sample, info = data.build(VAL_EPOCH, index)
            if info.negative is not None or sample.aligned < 0:
                continue
            known += 1
            objects, actions = corpus.truth(data, info)
            own = sample.own_candidate
            for view in VIEWS:
                candidates = named(sample, TokenType.ASR, corpus.words, view)
                dense = set(OBJECTS) & set().union(*named(sample, TokenType.DENSE, corpus.words, view))
                picks = {
                    "own caption": own,
                    "video oracle": choose([len(n & (objects | actions)) for n in candidates], own),
                    "objects only (2D oracle)": choose([len(n & objects) for n in candidates], own),
                    "text: dense captions": choose([len(n & dense) for n in candidates], own),
                }
                for name, pick in picks.items():
                    right[view][name] += int(pick == sample.aligned)
        found: dict[str, Any] = {
            view: {name: 100.0 * r / max(known, 1) for name, r in rules.items()} for view, rules in right.items()
        }
        found["samples scored"] = known
        results[f"seed {seed}"] = found
        print(f"seed {seed}: {json.dumps(found, indent=1)}", flush=True)
    for run_dir in args.runs:
        validate = run_validator(run_dir)
        measured = {}
        for view, changes in zip(VIEWS, ({"mask_prob": 0.0}, {}), strict=True):
            metrics = validate(**changes)
            measured[view] = {
                "u picks the true caption": metrics["alignment_acc"],
                "own caption": metrics["alignment_own_caption"],
            }
        results[f"run {run_dir.name}"] = measured
        print(f"{run_dir.name}: {json.dumps(measured, indent=1)}", flush=True)
    save(args, results)


if __name__ == "__main__":
    main()
