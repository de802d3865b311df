"""Training FLOPs per batch (MFU's numerator): a hand count, padding ignored, and torch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch

from decembert_cli.data.batch import IGNORE_INDEX, EncoderSample, TextSegment, TokenType, collate
from decembert_cli.model.flops import ModelShape, batch_flops, peak_flops
from tests.helpers import build_pretraining, tiny_bert_config


def _sample(video: int, caption: list[int], masked: int, seed: int = 0) -> EncoderSample:
    g = torch.Generator().manual_seed(seed)
    labels = [caption[i] if i < masked else IGNORE_INDEX for i in range(len(caption))]
    segments = [
        TextSegment(caption, TokenType.ASR, candidate=0, labels=labels),
        TextSegment([9], TokenType.ASR, candidate=1),
    ]
    return EncoderSample(torch.randn(video, 4, generator=g), torch.randn(video, 4, generator=g), segments, vtm_label=1)


def test_hand_count_of_a_small_config() -> None:
    shape = ModelShape(hidden=8, intermediate=16, layers=2, vocab=50, video_in=8)
    # 3 video tokens; text [CLS] 5 6 [SEP] 9 [SEP] = 6 tokens, 3 of them candidate tokens (5, 6, 9); 2 masked
    batch = collate([_sample(3, [5, 6], masked=2)], cls_id=2, sep_id=3)
    length = 3 + 6
    per_layer = 2 * length * (4 * 8 * 8 + 2 * 8 * 16)  # projections + feed-forward: 9 * 1024 = 9,216
    per_layer += 4 * length**2 * 8  # Q K^T and A V: 2,592
    per_layer += 2 * 3 * 3 * 8  # video queries x 3 candidate tokens: 144
    forward = 2 * per_layer + 2 * 3 * (8 * 8 + 8 * 8)  # 2 layers, video embedding: 768
    forward += 2 * 2 * (8 * 8 + 8 * 50)  # MLM head on 2 tokens: 1,856
    assert forward == 26_528
    assert batch_flops(shape, batch) == (3 * forward, length)
    assert batch_flops(shape, batch, constrained=False)[0] == 3 * (forward - 2 * 144)
    # VTM on the unmasked text: a second encoder pass, without the constrained blocks and the MLM head
    assert batch_flops(shape, batch, vtm_pass=True)[0] == 3 * forward  # (no unmasked ids: nothing was masked)
    unmasked = _sample(3, [5, 6], masked=2)
    unmasked.segments[0].original = [5, 6]
    second = 2 * (per_layer - 2 * 3 * 3 * 8) + 2 * 3 * (8 * 8 + 8 * 8)
    assert batch_flops(shape, collate([unmasked], cls_id=2, sep_id=3), vtm_pass=True)[0] == 3 * (forward + second)


def test_padding_is_not_counted() -> None:
    shape = ModelShape(hidden=8, intermediate=16, layers=2, vocab=50, video_in=8)
    short, long = _sample(2, [5], masked=1), _sample(7, [5, 6, 7, 8], masked=3, seed=1)
    alone = [batch_flops(shape, collate([s], cls_id=2, sep_id=3)) for s in (short, long)]
    together = batch_flops(shape, collate([short, long], cls_id=2, sep_id=3))
    assert together == (alone[0][0] + alone[1][0], alone[0][1] + alone[1][1])


@pytest.mark.parametrize(("hidden", "layers"), [(32, 3), (64, 2)])
def test_matches_torch_flop_counter_on_a_training_step(hidden: int, layers: int) -> None:
    """torch.utils.flop_counter counts every matmul of forward + backward as it runs (the eager attention
    path, whose matmuls it can see; the loss then reads the full logits, so no extra loss blocks)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = tiny_bert_config(layers=layers, hidden=hidden)
    model = build_pretraining(config, eager=True)
    samples = []
    for i in range(4):  # equal lengths: no padding for the counter to see
        segments = [TextSegment([5, 6, 7, 8], TokenType.DENSE, labels=[5, IGNORE_INDEX, IGNORE_INDEX, 8])]
        for j in range(3):
            segments.append(TextSegment([10 + j, 11, 12], TokenType.ASR, candidate=j, labels=[IGNORE_INDEX, 11, -100]))
        samples.append(EncoderSample(torch.randn(6, 16), torch.randn(6, 16), segments, vtm_label=i % 2))
    batch = collate(samples, cls_id=2, sep_id=3)
    assert bool(batch.text_mask.all()) and bool(batch.video_mask.all())
    with FlopCounterMode(display=False) as counter:
        model(batch).losses["total"].backward()
    ours, tokens = batch_flops(ModelShape.of(config, 16, 16), batch, constrained=False)
    assert tokens == 4 * (6 + 18)
    # ours also counts the input gradient of the first video layer, which autograd skips (and the tiny VTM head)
    assert ours == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_peak_flops() -> None:
    assert peak_flops(torch.device("cpu"), None) is None  # unknown: no MFU
    assert peak_flops(torch.device("cpu"), None, configured_tflops=2.5) == 2.5e12
