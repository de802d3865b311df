"""The video pathway can learn: MLM targets that only the video can tell are learned from the video.

Each sample shows one of a few objects (its 2D features: a noisy copy of the object's prototype; the
3D stream is noise) beside an ASR caption whose object word is masked; the words around it are the
same for every object, so the text alone gives chance. A tiny encoder trained with the library's
model, collate and MLM loss must then predict the word with the clip's own video far better than
with another clip's (the oracle-target study of issue 26: 100% vs 21% after 200 steps on the sample
corpus). The same check must fail when the video is blocked: masked out, detached from the gradient
(the video MLP then never learns), or shuffled across samples in training.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from decembert_cli.data.batch import IGNORE_INDEX, EncoderSample, TextSegment, TokenType, VideoTextBatch, collate
from tests.helpers import build_pretraining, tiny_bert_config

OBJECTS = list(range(10, 16))  # the object words' ids (6 objects: chance 1/6)
CONTEXT = [20, 21, 22]  # "now cut the" ... the same for every object
MASK_ID = 4
DIM = 16


def oracle_samples(rng: np.random.Generator, prototypes: np.ndarray, n: int) -> list[EncoderSample]:
    samples = []
    for _ in range(n):
        k = int(rng.integers(len(OBJECTS)))
        t = int(rng.integers(2, 5))
        video_2d = prototypes[k] + 0.5 * rng.standard_normal((t, DIM)) / np.sqrt(DIM)
        ids = [*CONTEXT, MASK_ID]
        labels = [IGNORE_INDEX] * len(CONTEXT) + [OBJECTS[k]]
        samples.append(
            EncoderSample(
                video_2d=torch.from_numpy(video_2d).float(),
                video_3d=torch.from_numpy(rng.standard_normal((t, DIM))).float(),
                segments=[TextSegment(ids, TokenType.ASR, labels=labels)],
            )
        )
    return samples


def blocked(batch: VideoTextBatch, how: str, rng: np.random.Generator) -> VideoTextBatch:
    if how == "masked":
        return dataclasses.replace(batch, video_mask=torch.zeros_like(batch.video_mask))
    if how == "shuffled":
        order = torch.from_numpy(rng.permutation(batch.batch_size))
        return dataclasses.replace(
            batch, video_2d=batch.video_2d[order], video_3d=batch.video_3d[order], video_mask=batch.video_mask[order]
        )
    return batch


def pathway_check(block: str | None, steps: int = 80, seed: int = 0) -> list[str]:
    """Train on oracle targets (the video blocked as `block` says); what fails of: MLM accuracy on
    held-out samples with their own video >= 0.9 and >= 0.6 above the video of a sample showing another
    object, and the video MLP's first layer receiving a gradient."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((len(OBJECTS), DIM))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    model = build_pretraining(tiny_bert_config(layers=2, hidden=32), dim=DIM, lam=0.0)
    model.encoder.video.match_scale(model.encoder.word_embeddings)
    if block == "detached":
        forward = model.encoder.video.forward
        model.encoder.video.forward = lambda v2, v3: forward(v2, v3).detach()  # type: ignore[method-assign]
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first_layer = model.encoder.video.mlp[0].weight
    video_gradient = 0.0
    model.train()
    for _ in range(steps):
        batch = collate(oracle_samples(rng, prototypes, 16), cls_id=2, sep_id=3, pad_id=0)
        batch = blocked(batch, block or "", rng)
        loss = model(batch).losses["total"]
        optimiser.zero_grad()
        loss.backward()
        video_gradient += 0.0 if first_layer.grad is None else float(first_layer.grad.norm())
        optimiser.step()

    model.eval()
    test = oracle_samples(np.random.default_rng(seed + 1000), prototypes, 256)
    batch = collate(test, cls_id=2, sep_id=3, pad_id=0)
    if block == "masked":
        batch = blocked(batch, "masked", rng)
    assert batch.mlm_labels is not None
    targets = batch.mlm_labels[batch.mlm_labels != IGNORE_INDEX]  # one per sample
    partner = [
        next(j % len(test) for j in range(i + 1, i + len(test)) if targets[j % len(test)] != targets[i])
        for i in range(len(test))
    ]
    swapped = dataclasses.replace(
        batch, video_2d=batch.video_2d[partner], video_3d=batch.video_3d[partner], video_mask=batch.video_mask[partner]
    )
    accuracy = []
    with torch.no_grad():
        for b in (batch, swapped):
            enc = model.encoder(b)
            hidden = enc.text[b.mlm_labels != IGNORE_INDEX]
            accuracy.append(float((model.mlm(hidden).argmax(-1) == targets).float().mean()))
    own, swapped = accuracy
    failures = []
    if own < 0.9 or own - swapped < 0.6:
        failures.append(f"accuracy with own video {own:.2f}, with another object's video {swapped:.2f}")
    if video_gradient == 0.0:
        failures.append("the video MLP received no gradient")
    return failures


def test_video_pathway_learns_targets_only_the_video_tells() -> None:
    assert pathway_check(None) == []


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("masked", "accuracy with own video"),
        ("shuffled", "accuracy with own video"),
        # a frozen random video MLP still separates the objects, so attention can still read them: what
        # fails is the gradient check
        ("detached", "no gradient"),
    ],
)
def test_the_check_fails_when_the_video_is_blocked(block: str, expected: str) -> None:
    failures = pathway_check(block)
    assert any(expected in f for f in failures), failures
