"""How large can "MLM on the ASR of matching pairs, own minus swapped video" be on the sample corpus?

Pre-training's validation reports MLM accuracy on the masked ASR tokens of VTM positives twice: with the clip's
own video features and with another sample's (`mlm_acc_asr_positives` / `mlm_acc_asr_swapped_video`). The
difference is what the video contributes, and it can only come from targets the video tells: a masked object
word the clip's frames show (the 2D stream) or an action word its motion shows (the 3D stream), and only where
the swapped-in clip does not show the same word.

This script draws the validation samples exactly as `decembert pretrain` does (the library's dataset, the run's
seed and masking, the held-out videos in validation order, batches of `train.batch_size`) and sorts every
masked ASR token of a positive by what the generator knows of both clips:

- `object shown, not by the swap`: an object word shown in the clip's seconds and not in the swapped clip's;
- `object shown by both`: shown in both (the swap cannot tell);
- `action shown, not by the swap` / `action shown by both`: the same for action words;
- `object or action not shown`: named but not under the clip's seconds (the noisy ASR);
- `other`: every other token (filler, task words, WordPieces).

The gap cannot exceed (about) the share of the "not by the swap" rows times the accuracy a model reaches on
them: the probe of `video_use.py` measures 55-62% own vs 5-7% swapped on object words, so the expected gap is
that share times ~0.55. Validation gives each sample the video of the one before it in its batch; two orders of
the validation items are scored: clip order (until 2026-12-06: neighbouring items were mostly consecutive clips
of one video, which show the same objects) and today's order, interleaved across videos (`validation_indices`).

With `--runs`, each pre-training run folder's final model is also validated under both orders (the library's
own validation: `engine.loop.evaluate`, the run's config and seed), so the measured gap can be set beside the
share: the model is the same, only the swap differs.

    python benchmarks/asr_gap_ceiling.py --corpus /tmp/t6/corpus --dim 512 --seeds 0 1 \
        --runs /tmp/t6/pretrain-full-seed0 /tmp/t6/pretrain-full-seed1
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_truth import arguments, open_sample, run_validator, save, val_batch_size  # noqa: E402

# the two orders of the validation items: interleaved across videos (validation_indices given the clip offsets)?
ORDERS = {"clip order (validation before 2026-12-06)": False, "validation order (interleaved across videos)": True}
KINDS = (
    "object shown, not by the swap",
    "object shown by both",
    "action shown, not by the swap",
    "action shown by both",
    "object or action not shown",
    "other",
)


def sort_tokens(sample: Any, own: tuple[set, set], swap: tuple[set, set], words: dict[int, str]) -> Counter:
    """Counter over KINDS of the masked ASR tokens of one positive sample."""
    from decembert_cli.data.batch import IGNORE_INDEX, TokenType
    from decembert_cli.data.sample.vocabulary import ACTIONS, OBJECTS

    found: Counter = Counter()
    for seg in sample.segments:
        if seg.kind != TokenType.ASR:
            continue
        for label in seg.labels:
            if label == IGNORE_INDEX:
                continue
            word = words.get(int(label))
            if word in OBJECTS and word in own[0]:
                found[KINDS[0] if word not in swap[0] else KINDS[1]] += 1
            elif word in ACTIONS and word in own[1]:
                found[KINDS[2] if word not in swap[1] else KINDS[3]] += 1
            elif word in OBJECTS or word in ACTIONS:
                found[KINDS[4]] += 1
            else:
                found[KINDS[5]] += 1
    return found


def measured_gap(run_dir: Path) -> dict[str, dict[str, float]]:
    """MLM accuracy on the ASR of matching pairs with own / swapped video, validated in each order (per cent)."""
    validate = run_validator(run_dir)
    found = {}
    for name, interleaved in ORDERS.items():
        metrics = validate(interleaved=interleaved)
        own, swapped = metrics["mlm_acc_asr_positives"], metrics["mlm_acc_asr_swapped_video"]  # per cent
        found[name] = {"own video": own, "swapped video": swapped, "gap": own - swapped}
    return found


def main() -> None:
    from decembert_cli.data.corpus import VAL_EPOCH, validation_indices

    args = arguments(__doc__, "asr_gap_ceiling.json", "the runs' seeds (they draw the masks)", runs=True).parse_args()

    results: dict[str, Any] = {}
    for seed in args.seeds:
        corpus = open_sample(args, seed)
        data = corpus.dataset(corpus.val_videos)
        size = val_batch_size(corpus.config)
        found: dict[str, Any] = {}
        for name, interleaved in ORDERS.items():
            offsets = data.clip_offsets if interleaved else None
            order = validation_indices(len(data), corpus.config.data.val_samples, offsets)
            built = [data.build(VAL_EPOCH, i) for i in order]  # a sample depends on its index, not its place
            # the validation's swap: each sample gets the video of the one before it in its batch (torch.roll)
            partner = [i - i % size + (i % size - 1) % min(size, len(built) - i + i % size) for i in range(len(built))]
            shown = [corpus.truth(data, info) for _sample, info in built]
            counts: Counter = Counter()
            same_video = positives = 0
            for i, (sample, info) in enumerate(built):
                if info.negative is not None:
                    continue
                positives += 1
                same_video += int(built[partner[i]][1].video == info.video)
                counts += sort_tokens(sample, shown[i], shown[partner[i]], corpus.words)
            total = sum(counts.values())
            share = {k: 100.0 * counts[k] / max(total, 1) for k in KINDS}
            found[name] = {
                "positives": positives,
                "swapped video from the same video (%)": 100.0 * same_video / max(positives, 1),
                "masked ASR tokens": total,
                "share (%)": share,
                "video tells, the swap does not (%)": share[KINDS[0]] + share[KINDS[2]],
            }
        results[f"seed {seed}"] = found
        print(f"seed {seed}: {json.dumps(found, indent=1)}", flush=True)
    for run_dir in args.runs:
        results[f"run {run_dir.name}"] = measured = measured_gap(run_dir)
        print(f"{run_dir.name}: {json.dumps(measured, indent=1)}", flush=True)
    save(args, results)


if __name__ == "__main__":
    main()
