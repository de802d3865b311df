"""How high can VTM go on the sample corpus? Rules that know the generator's truth, scored on the validation pairs.

The sample corpus is built to be noisy like HowTo100M: a clip's ASR candidates (the caption and its neighbours)
may describe a neighbouring segment or nothing at all, and half of the VTM negatives are captions of the same
video, which shows the same few objects. So even a model that reads the video perfectly cannot win every pair.
This script draws the validation pairs exactly as `decembert pretrain` does (the library's dataset, the same
seed, held-out videos, `data.*` of the demo preset) and scores rules that use what the generator knows:

- `video oracle`: from perfect perception of the clip's frames (which objects the 2D stream shows and which
  actions the 3D stream shows over the clip's seconds, from the generator's plan) and the ASR candidates' words:
  how many named objects / actions are shown, whether the named objects belong to the shown objects' domain,
  whether any object is named at all, and the number of candidates. The best decision for each combination is
  learnt on the training videos' pairs (a lookup table, majority label) and scored on the validation pairs.
- `text only`: the same with what the text alone holds (an ASR object word appears in a dense caption; dense
  captions are of the clip's own frames even for a negative, so the text can tell some negatives apart).
- `video oracle + text`: both.
- single rules (e.g. "an ASR candidate names an object the clip shows").

The lookup tables are an estimate of the ceiling, not a bound: a model could use cues these features leave out
(the order of objects over the clip's seconds, filler words). The 3D stream's actions are taken at the same
1-s grid as the 2D stream (its features are at 1.5/s), a small approximation.

    python benchmarks/vtm_ceiling.py --corpus /tmp/vu/corpus --dim 512 --seeds 0 1
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_truth import Corpus, arguments, open_sample, save  # noqa: E402


def features(sample: Any, truth: tuple[set[str], set[str]], words: dict[int, str]) -> dict[str, int]:
    """What each rule may read of one pair (see the module doc)."""
    from decembert_cli.data.batch import TokenType
    from decembert_cli.data.sample.vocabulary import ACTIONS, DOMAINS, OBJECTS

    def named(kind: TokenType, among: tuple[str, ...]) -> set[str]:
        found = set()
        for seg in sample.segments:
            if seg.kind == kind:
                found |= {words[t] for t in (seg.original or seg.ids) if words.get(t) in among}
        return found

    shown_objects, shown_actions = truth
    asr_objects, asr_actions = named(TokenType.ASR, OBJECTS), named(TokenType.ASR, ACTIONS)
    dense_objects = named(TokenType.DENSE, OBJECTS)
    domain = {o for d in DOMAINS if shown_objects & set(d.objects) for o in d.objects}
    return {
        "objects_shown": min(len(asr_objects & shown_objects), 2),
        "actions_shown": min(len(asr_actions & shown_actions), 2),
        "same_domain": int(bool(asr_objects & domain)),
        "names_object": int(bool(asr_objects)),
        "candidates": sum(1 for s in sample.segments if s.kind == TokenType.ASR),
        "in_dense": int(bool(asr_objects & dense_objects)),
    }


RULE_SETS = {
    "video oracle": ("objects_shown", "actions_shown", "same_domain", "names_object", "candidates"),
    "text only": ("in_dense", "names_object", "candidates"),
    "video oracle + text": ("objects_shown", "actions_shown", "same_domain", "names_object", "candidates", "in_dense"),
    "names a shown object": ("objects_shown",),
    "names a shown object or action": ("objects_shown", "actions_shown"),
    "named object of the shown domain": ("same_domain",),
}


def pairs(corpus: Corpus, data: Any, epochs: list[int], indices: list[int]) -> list:
    rows = []
    for epoch in epochs:
        for index in indices:
            sample, info = data.build(epoch, index)
            rows.append((features(sample, corpus.truth(data, info), corpus.words), sample.vtm_label, info))
    return rows


def lookup_accuracy(train: list, val: list, keys: tuple[str, ...]) -> float:
    """Accuracy on `val` of the majority label of each feature combination in `train` (positive when unseen)."""
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for feats, label, _info in train:
        votes[tuple(feats[k] for k in keys)][label] += 1
    right = 0
    for feats, label, _info in val:
        seen = votes.get(tuple(feats[k] for k in keys))
        guess = 1 if not seen else int(seen[1] >= seen[0])
        right += int(guess == label)
    return 100.0 * right / len(val)


def main() -> None:
    from decembert_cli.data.corpus import VAL_EPOCH, validation_indices

    parser = arguments(__doc__, "vtm_ceiling_sample.json", "the runs' seeds (they draw the pairs)")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of training pairs the tables learn from")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    for seed in args.seeds:
        corpus = open_sample(args, seed)
        shown = dataclasses.replace(corpus.config.data, mask_prob=0.0)  # masks do not change which pairs are drawn
        made = {"train": corpus.dataset(corpus.train_videos, shown), "val": corpus.dataset(corpus.val_videos, shown)}
        train = pairs(corpus, made["train"], list(range(args.train_epochs)), list(range(len(made["train"]))))
        val_indices = validation_indices(len(made["val"]), corpus.config.data.val_samples)
        val = pairs(corpus, made["val"], [VAL_EPOCH], val_indices)
        found: dict[str, Any] = {name: lookup_accuracy(train, val, keys) for name, keys in RULE_SETS.items()}
        kinds = Counter("positive" if info.negative is None else info.negative for _f, _l, info in val)
        found["validation pairs"] = {k: kinds[k] for k in sorted(kinds)}
        found["positives naming a shown object (%)"] = 100.0 * np.mean(
            [f["objects_shown"] > 0 for f, label, _i in val if label == 1]
        )
        found["same-video negatives naming a shown object (%)"] = 100.0 * np.mean(
            [f["objects_shown"] > 0 for f, _l, info in val if info.negative == "same-video"]
        )
        results[f"seed {seed}"] = found
        print(f"seed {seed}: {json.dumps(found, indent=1)}", flush=True)
    save(args, results, train_epochs=args.train_epochs)


if __name__ == "__main__":
    main()
