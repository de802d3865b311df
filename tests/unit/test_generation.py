"""Caption generation: the seq2seq mask, cached = recomputed decoding, beam 1 = greedy,
beam search is exact when exhaustive."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate
from decembert_cli.model.encoder import DecembertEncoder
from decembert_cli.model.generation import Decoding, generate, greedy, seq2seq_mask
from decembert_cli.model.heads import MLMHead
from tests.helpers import tiny_bert_config

CLS, SEP, PAD = 101, 102, 0
EOS = SEP


@pytest.fixture(scope="module")
def model() -> tuple[DecembertEncoder, MLMHead]:
    torch.manual_seed(0)
    config = tiny_bert_config(layers=2, hidden=32)
    config.vocab_size = 120
    encoder = DecembertEncoder(config, dim_2d=8, dim_3d=8, max_video_tokens=20, eager=False).eval()
    head = MLMHead(config, encoder.word_embeddings).eval()
    with torch.no_grad():
        head.bias.normal_(0, 2.0)  # a peaked, input-dependent distribution
        for p in encoder.parameters():
            p.mul_(3.0)
    return encoder, head


def _contexts(n: int, seed: int = 0) -> list[EncoderSample]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        t = int(rng.integers(2, 7))  # videos and contexts of different lengths: padding everywhere
        dense = [
            TextSegment(rng.integers(1, 100, size=int(rng.integers(1, 5))).tolist(), TokenType.DENSE)
            for _ in range(i % 3)
        ]
        video = torch.from_numpy(rng.standard_normal((2, t, 8)).astype(np.float32))
        samples.append(EncoderSample(video[0], video[1], dense))
    return samples


def _batch(samples: list[EncoderSample]) -> VideoTextBatch:
    return collate(samples, cls_id=CLS, sep_id=SEP, pad_id=PAD, max_video_tokens=20)


def _sequence_score(
    model: tuple[DecembertEncoder, MLMHead],
    sample: EncoderSample,
    caption: list[int],
    allowed: torch.Tensor | None,
    alpha: float,
    ended: bool = True,
) -> float:
    """Teacher forcing over [context][caption + SEP] with the training mask: sum log p / length ** alpha
    (`ended` False: a caption cut at max_length, its [SEP] not predicted)."""
    encoder, head = model
    context = _batch([sample])
    full = _batch(
        [
            replace(
                sample,
                segments=[*sample.segments, TextSegment(caption, TokenType.ASR)] if caption else list(sample.segments),
            )
        ]
    )
    if not caption:  # an empty caption: the context's last token predicts [SEP] directly
        full = context
    start = context.text_mask.sum(1)
    mask = seq2seq_mask(full.video_mask, full.text_mask, start)
    with torch.no_grad():
        hidden = encoder(full, attention_mask=mask).sequence
        v = full.video_mask.shape[1]
        targets = caption + [EOS] if ended else caption
        positions = [v + int(start) - 1 + i for i in range(len(targets))]
        logits = head(hidden[0, positions]).float()
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        logp = torch.log_softmax(logits, -1)
    return float(sum(logp[i, tok] for i, tok in enumerate(targets))) / len(targets) ** alpha


def test_seq2seq_mask() -> None:
    video_mask = torch.tensor([[True, True, False]])
    text_mask = torch.tensor([[True, True, True, True, False]])  # context: text 0-1, caption: text 2-3, then padding
    m = seq2seq_mask(video_mask, text_mask, torch.tensor([2]))[0, 0]
    ctx, cap = [0, 1, 3, 4], [5, 6]
    for i in ctx:
        assert m[i, ctx].all() and not m[i, cap].any() and not m[i, 2] and not m[i, 7]
    assert m[5, ctx].all() and m[5, 5] and not m[5, 6] and m[6, 5] and m[6, 6] and not m[6, 7]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_cached_decoding_equals_recomputing_and_beam_1_equals_greedy(
    model: tuple[DecembertEncoder, MLMHead], alpha: float
) -> None:
    encoder, head = model
    batch = _batch(_contexts(5))
    with torch.no_grad():
        for beam in (1, 3):
            cached = generate(
                encoder, head, batch, Decoding(beam_size=beam, max_length=8, length_penalty=alpha), eos_id=EOS
            )
            again = generate(
                encoder,
                head,
                batch,
                Decoding(beam_size=beam, max_length=8, length_penalty=alpha, use_cache=False),
                eos_id=EOS,
            )
            assert [c[0] for c in cached] == [a[0] for a in again]
            np.testing.assert_allclose([c[1] for c in cached], [a[1] for a in again], rtol=1e-4)
        plain = greedy(encoder, head, batch, Decoding(beam_size=1, max_length=8, length_penalty=alpha), eos_id=EOS)
        beam1 = generate(encoder, head, batch, Decoding(beam_size=1, max_length=8, length_penalty=alpha), eos_id=EOS)
    assert [p[0] for p in plain] == [b[0] for b in beam1]
    assert any(len(p[0]) > 0 for p in plain)
    for sample, (tokens, score) in zip(_contexts(5), plain):  # the scores are the sequences' own
        assert score == pytest.approx(
            _sequence_score(model, sample, tokens, None, alpha, ended=len(tokens) < 8), rel=1e-4, abs=1e-4
        )


def test_exhaustive_beam_finds_the_best_sequence(model: tuple[DecembertEncoder, MLMHead]) -> None:
    allowed = torch.zeros(120, dtype=torch.bool)
    words = [7, 8, 9]
    allowed[words + [EOS]] = True
    samples = _contexts(3, seed=1)
    with torch.no_grad():
        found = generate(
            *model,
            _batch(samples),
            Decoding(beam_size=40, max_length=3, length_penalty=0.0),
            eos_id=EOS,
            allowed=allowed,
        )
    for sample, (tokens, score) in zip(samples, found):
        every = [list(c) for n in range(3) for c in itertools.product(words, repeat=n)]  # up to 2 words, then [SEP]
        scored = {tuple(c): _sequence_score(model, sample, c, allowed, 0.0) for c in every}
        # cut
        scored.update(
            {
                c: _sequence_score(model, sample, list(c), allowed, 0.0, ended=False)
                for c in itertools.product(words, repeat=3)
            }
        )
        best = max(scored, key=scored.get)
        assert tuple(tokens) == best and score == pytest.approx(scored[best], rel=1e-4, abs=1e-5)


def test_no_repeat_ngram(model: tuple[DecembertEncoder, MLMHead]) -> None:
    allowed = torch.zeros(120, dtype=torch.bool)
    allowed[[7, 8, EOS]] = True
    with torch.no_grad():
        out = generate(
            *model,
            _batch(_contexts(4)),
            Decoding(beam_size=2, max_length=12, no_repeat_ngram=2),
            eos_id=EOS,
            allowed=allowed,
        )
    for tokens, _ in out:
        pairs = list(zip(tokens, tokens[1:]))
        assert len(pairs) == len(set(pairs))
