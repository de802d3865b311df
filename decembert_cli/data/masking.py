"""Masked language modelling on token ids: which tokens are masked (the unit) and what replaces them.

Units (`data.mask_unit`), each masking about `mask_prob` of a sample's text tokens:
- token: every WordPiece token on its own with probability `mask_prob` (the paper, and BERT);
- word: whole words (a word and its ## continuations), drawn in random order until the sample's
  budget of masked tokens is spent (whole-word masking);
- concept: content words drawn in random order, each masked at EVERY mention in the sample's text
  (all ASR candidates and dense captions alike), until the budget is spent; then whole other words.
  A word masked in one caption and left visible in another can be copied from the text; masked
  everywhere, it has to come from the video (DESIGN.md §1, "Measured here").
Replacement (`data.mask_replace`): every selected token becomes [MASK] (the paper, and its released
code), or BERT's 80% [MASK] / 10% a random token / 10% kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from decembert_cli.data.batch import IGNORE_INDEX

MaskReplace = Literal["mask", "bert"]
MaskUnit = Literal["token", "word", "concept"]

# Words that are never a concept: English function words (and the `<unk>` of dense captioners). A
# concept is a word of letters only, at least 2 long, not in this list.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just let me more most my myself
    no nor not now of off on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    yourselves s t don okay ok oh yeah um uh like really get got going gonna go want wanna also well right
    unk""".split()
)


@dataclass(frozen=True)
class WordPieces:
    """What masking needs of a WordPiece vocabulary: the token strings (for word boundaries and concepts)."""

    pieces: tuple[str, ...]  # id -> token string ("##ing" continues a word)
    mask_id: int
    vocab_size: int

    @classmethod
    def of(cls, tokenizer: Any) -> WordPieces:
        vocab_size = len(tokenizer)
        pieces = tuple(str(p) for p in tokenizer.convert_ids_to_tokens(list(range(vocab_size))))
        return cls(pieces=pieces, mask_id=int(tokenizer.mask_token_id), vocab_size=vocab_size)

    def words(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """(start, end) of each word of `ids`: a token and the ## continuations that follow it."""
        spans: list[tuple[int, int]] = []
        for i, token in enumerate(ids):
            piece = self.pieces[token] if 0 <= token < len(self.pieces) else ""
            if spans and piece.startswith("##"):
                spans[-1] = (spans[-1][0], i + 1)
            else:
                spans.append((i, i + 1))
        return spans

    def is_concept(self, word: Sequence[int]) -> bool:
        """A content word: letters only, 2 or more, not a stop word."""
        text = "".join(self.pieces[t].removeprefix("##") if 0 <= t < len(self.pieces) else "?" for t in word)
        return len(text) >= 2 and text.isalpha() and text not in STOP_WORDS


def mask_tokens(
    ids: list[int],
    prob: float,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    replace: MaskReplace = "mask",
) -> tuple[list[int], list[int]]:
    """Select each token with probability `prob` and replace it in the input (the token unit).

    Returns (input ids, labels) with labels = the original id where selected, IGNORE_INDEX elsewhere.
    """
    n = len(ids)
    if n == 0:
        return [], []
    selected = rng.random(n) < prob
    return _replace(ids, selected, rng, mask_id=mask_id, vocab_size=vocab_size, replace=replace)


def _replace(
    ids: Sequence[int], selected: np.ndarray, rng: np.random.Generator, *, mask_id: int, vocab_size: int, replace: str
) -> tuple[list[int], list[int]]:
    original = np.asarray(ids, dtype=np.int64)
    inputs = original.copy()
    if replace == "mask":
        inputs[selected] = mask_id
    elif replace == "bert":
        action = rng.random(len(original))
        inputs[selected & (action < 0.8)] = mask_id
        swap = selected & (action >= 0.8) & (action < 0.9)
        inputs[swap] = rng.integers(0, vocab_size, size=int(swap.sum()))
    else:
        raise ValueError(f"mask replacement {replace!r}: use mask or bert")
    labels = np.where(selected, original, IGNORE_INDEX)
    return inputs.tolist(), labels.tolist()


def mask_segments(
    segments: Sequence[list[int]],
    prob: float,
    rng: np.random.Generator,
    *,
    unit: MaskUnit,
    pieces: WordPieces,
    replace: MaskReplace = "mask",
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each text segment of one sample, masked by `unit` (see the module doc).

    token: each segment as `mask_tokens` (the same random draws as masking them one by one). word and
    concept: a budget of Binomial(tokens, prob) masked tokens for the whole sample (so `prob` keeps
    meaning the share of masked tokens); a word that would overshoot it is skipped, a concept is
    all-or-nothing (its last one may overshoot)."""
    mask_id, vocab_size = pieces.mask_id, pieces.vocab_size
    if unit == "token":
        return [
            mask_tokens(ids, prob, rng, mask_id=mask_id, vocab_size=vocab_size, replace=replace) for ids in segments
        ]
    if unit not in ("word", "concept"):
        raise ValueError(f"mask unit {unit!r}: use token, word or concept")
    words = [(s, a, b) for s, ids in enumerate(segments) for a, b in pieces.words(ids)]
    selected = [np.zeros(len(ids), dtype=bool) for ids in segments]
    budget = int(rng.binomial(sum(len(ids) for ids in segments), prob))
    masked = 0
    taken = np.zeros(len(words), dtype=bool)
    if unit == "concept":
        mentions: dict[tuple[int, ...], list[int]] = {}
        for w, (s, a, b) in enumerate(words):
            word = tuple(segments[s][a:b])
            if pieces.is_concept(word):
                mentions.setdefault(word, []).append(w)
        concepts = list(mentions.values())
        for c in rng.permutation(len(concepts)):
            if masked >= budget:
                break
            for w in concepts[c]:
                s, a, b = words[w]
                selected[s][a:b] = True
                masked += b - a
                taken[w] = True
    for w in rng.permutation(len(words)):
        s, a, b = words[w]
        if masked >= budget:
            break
        if not taken[w] and masked + (b - a) <= budget:
            selected[s][a:b] = True
            masked += b - a
    return [
        _replace(ids, sel, rng, mask_id=mask_id, vocab_size=vocab_size, replace=replace)
        for ids, sel in zip(segments, selected, strict=True)
    ]
