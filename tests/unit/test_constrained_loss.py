"""The constrained attention loss: fused path == naive reference from full eager logits; hand examples."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from decembert_cli.data.batch import VideoTextBatch, candidate_layout, collate
from decembert_cli.model.attention import attention_entropy, candidate_scores
from tests.helpers import build_pretraining, random_batch, random_samples, tiny_bert_config


def naive_constrained_loss(
    scores: list[torch.Tensor], batch: VideoTextBatch, takes_part: torch.Tensor, both: bool = False
) -> torch.Tensor:
    """DESIGN.md §1 written out with loops over samples, layers, heads and candidates.

    scores: per layer (B, h, L, L) logits (the paper) or attention probabilities (the released code's
    variant); both: also the text-to-video direction (caption-token rows, video columns), 0.5 / 0.5."""
    v = batch.video_mask.shape[1]
    per_sample = []
    for b in range(batch.batch_size):
        if not takes_part[b]:
            continue
        video_rows = [i for i in range(v) if batch.video_mask[b, i]]
        caps: dict[int, list[int]] = {}
        for t, j in enumerate(batch.caption_id[b].tolist()):
            if j >= 0:
                caps.setdefault(j, []).append(v + t)

        def entropy(z: list[torch.Tensor]) -> torch.Tensor:
            u = torch.softmax(torch.stack(z), dim=0)
            return -(u * torch.log(u)).sum()

        entropies = []
        for layer in scores:
            for h in range(layer.shape[1]):
                s = layer[b, h]
                z = []  # max over the caption's tokens (keys), mean over the video tokens (queries)
                for j in sorted(caps):
                    per_video = [torch.max(torch.stack([s[i, c] for c in caps[j]])) for i in video_rows]
                    z.append(torch.stack(per_video).mean())
                if not both:
                    entropies.append(entropy(z))
                    continue
                z_t2v = []  # max over the caption's tokens (queries), mean over the video tokens (keys)
                for j in sorted(caps):
                    per_video = [torch.max(torch.stack([s[c, i] for c in caps[j]])) for i in video_rows]
                    z_t2v.append(torch.stack(per_video).mean())
                entropies.append(0.5 * entropy(z) + 0.5 * entropy(z_t2v))
        per_sample.append(torch.stack(entropies).mean())
    return torch.stack(per_sample).mean()


@pytest.mark.parametrize("neighbours", [1, 2, 3, 4, [1, 4, 2, 3, 1]])
def test_fused_equals_naive_reference_with_gradients(neighbours: int | list[int]) -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=3, heads=4), on_negatives=True).double().eval()
    with torch.no_grad():  # sharpen attention so that u is far from uniform
        for layer in model.encoder.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(25.0)
            layer.attention.self.key.weight.mul_(25.0)
    batch = random_batch(1 + (neighbours if isinstance(neighbours, int) else 9), batch_size=5, neighbours=neighbours)
    batch.video_2d, batch.video_3d = batch.video_2d.double(), batch.video_3d.double()
    # padding in every segment: video, dense, candidate captions, text
    assert not batch.video_mask.all() and not batch.text_mask.all()
    layout_mask = candidate_layout(batch.caption_id, batch.video_mask.shape[1])[1]
    assert not layout_mask.all()

    fused = model(batch).losses["constrained"]
    fused_grads = torch.autograd.grad(fused, [p for p in model.parameters()], allow_unused=True)

    eager_out = model(batch, keep_logits=True)
    assert (
        len(eager_out.encoder.logits) == 3
        and eager_out.encoder.logits[0].shape[-1] == eager_out.encoder.sequence.shape[1]
    )
    takes_part = batch.video_mask.any(-1) & (eager_out.encoder.candidate_valid.sum(-1) >= 2)
    naive = naive_constrained_loss(eager_out.encoder.logits, batch, takes_part)
    naive_grads = torch.autograd.grad(naive, [p for p in model.parameters()], allow_unused=True)

    assert torch.allclose(fused, naive, atol=1e-5, rtol=0), (fused.item(), naive.item())
    fewest = min(neighbours) if isinstance(neighbours, list) else neighbours
    assert 0 < fused.item() < 0.9 * math.log(2 * fewest + 1)  # far from flat attention
    compared = 0
    for gf, gn in zip(fused_grads, naive_grads):
        if gf is None or gn is None:
            assert gf is None and gn is None or (gf if gf is not None else gn).abs().max() < 1e-12
            continue
        assert torch.allclose(gf, gn, atol=1e-6, rtol=1e-5)
        compared += 1
    assert compared > 10  # the attention projections of every layer, the video MLP, embeddings


def test_fused_equals_naive_in_float32() -> None:
    torch.manual_seed(1)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2), on_negatives=True).eval()
    batch = random_batch(7, batch_size=4, neighbours=2)
    fused = model(batch).losses["constrained"]
    out = model(batch, keep_logits=True)
    takes_part = batch.video_mask.any(-1) & (out.encoder.candidate_valid.sum(-1) >= 2)
    naive = naive_constrained_loss(out.encoder.logits, batch, takes_part)
    assert abs(fused.item() - naive.item()) < 1e-5


@pytest.mark.parametrize("scores,direction", [("probs", "v2t"), ("logits", "both"), ("probs", "both")])
def test_released_code_variants_fused_equal_naive(scores: str, direction: str) -> None:
    torch.manual_seed(2)
    model = build_pretraining(tiny_bert_config(layers=2, heads=4), on_negatives=True).double().eval()
    model.constrained_scores, model.constrained_direction = scores, direction
    with torch.no_grad():
        for layer in model.encoder.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(10.0)
            layer.attention.self.key.weight.mul_(10.0)
    batch = random_batch(11, batch_size=4, neighbours=[1, 2, 1, 3])
    batch.video_2d, batch.video_3d = batch.video_2d.double(), batch.video_3d.double()
    fused = model(batch).losses["constrained"]
    eager = model(batch, keep_logits=True, output_attentions=True)
    assert torch.allclose(eager.losses["constrained"], fused, atol=1e-10)
    # probabilities: softmax with the masks
    maps = eager.encoder.attentions if scores == "probs" else eager.encoder.logits
    takes_part = batch.video_mask.any(-1) & (eager.encoder.candidate_valid.sum(-1) >= 2)
    naive = naive_constrained_loss(list(maps), batch, takes_part, both=direction == "both")
    assert torch.allclose(fused, naive, atol=1e-8), (fused.item(), naive.item())
    grads = torch.autograd.grad(fused, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 10
    if (
        scores == "probs"
    ):  # probabilities in [0, 1]: u stays close to uniform (why the released code's loss is nearly inert)
        assert fused.item() > 0.9 * math.log(2)


@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_permuting_the_candidates_permutes_u(attention: str) -> None:
    """Candidates share positions and do not see each other: only their words tell them apart, so
    reordering them in the sequence reorders u and changes nothing else."""
    torch.manual_seed(3)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2), eager=attention == "eager").eval()
    rng = np.random.default_rng(4)
    samples = random_samples(rng, batch_size=3, neighbours=[1, 2, 1])
    perms = [rng.permutation(len([s for s in x.segments if s.candidate >= 0])) for x in samples]
    permuted = []
    for x, perm in zip(samples, perms):
        dense = [s for s in x.segments if s.candidate < 0]
        cands = [s for s in x.segments if s.candidate >= 0]
        moved = [
            dataclasses.replace(cands[int(j)], candidate=c) for c, j in enumerate(perm)
        ]  # slot c holds old candidate perm[c]
        permuted.append(dataclasses.replace(x, segments=dense + moved))
    a = collate(samples, cls_id=2, sep_id=3, pad_id=0)
    b = collate(permuted, cls_id=2, sep_id=3, pad_id=0)
    for batch in (a, b):  # equal positions: every candidate of a sample starts at the same one
        for row in range(3):
            starts = {
                int(c): int(batch.text_pos[row, t])
                for t, c in reversed(list(enumerate(batch.caption_id[row].tolist())))
                if c >= 0
            }
            assert len(set(starts.values())) == 1
    with torch.no_grad():
        out_a, out_b = model(a), model(b)
    for row, perm in enumerate(perms):
        u_a = out_a.encoder.candidate_u[row][..., : len(perm)]
        u_b = out_b.encoder.candidate_u[row][..., : len(perm)]
        torch.testing.assert_close(u_b, u_a[..., torch.as_tensor(perm)], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_a.losses["constrained"], out_b.losses["constrained"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_a.encoder.pooled, out_b.encoder.pooled, atol=1e-5, rtol=0)


def test_lambda_warmup_ramps_the_weight() -> None:
    from decembert_cli.model.pretraining import lambda_ramp

    assert [lambda_ramp(s, 100, 0.1) for s in (1, 5, 10, 11, 100)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert [lambda_ramp(s, 1000, 20) for s in (1, 10, 20, 500)] == [0.05, 0.5, 1.0, 1.0]  # >= 1: steps
    assert lambda_ramp(1, 100, 0.0) == 1.0
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2), lam=2.0).eval()
    model.constrained_warmup = 0.5
    batch = random_batch(2, batch_size=4, neighbours=1)
    model.set_step(10, 100)
    early = model(batch)
    assert early.weights["constrained"] == pytest.approx(2.0 * 0.2)
    torch.testing.assert_close(
        early.losses["total"], early.losses["mlm"] + early.losses["vtm"] + 0.4 * early.losses["constrained"]
    )
    model.set_step(60, 100)
    assert model(batch).weights["constrained"] == 2.0


def test_validation_reports_choices_by_time_offset() -> None:
    from decembert_cli.model.pretraining import DecembertForPretraining, collapse_warning

    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2)).eval()
    rng = np.random.default_rng(5)
    samples = random_samples(rng, batch_size=6, neighbours=1, vtm=True)
    for x in samples:  # slots hold offsets (+1, -1, 0); the true caption is s_{i-1}
        x.candidate_offsets, x.own_candidate, x.aligned = [1, -1, 0], 2, 1
    batch = collate(samples, cls_id=2, sep_id=3, pad_id=0)
    out = model(batch)
    positives = batch.vtm_labels == 1
    choice = out.encoder.candidate_u.mean(dim=(1, 2)).argmax(-1)
    offset_of = torch.tensor([1, -1, 0])[choice]
    stats = out.stats
    assert stats["argmax_count"] == positives.sum() == stats["align_count"]
    for o in (-1, 0, 1):
        assert stats[f"argmax_offset{o:+d}"] == (positives & (offset_of == o)).sum()
    assert stats["align_correct"] == (positives & (choice == 1)).sum()
    assert stats["align_prev"] == positives.sum() and stats["align_own"] == 0
    metrics = DecembertForPretraining.metrics({k: float(v) for k, v in stats.items()})
    assert metrics["alignment_prev_caption"] == 100.0 and metrics["alignment_own_caption"] == 0.0  # per cent
    assert sum(metrics[f"argmax_u_offset{o:+d}"] for o in (-1, 0, 1)) == pytest.approx(100.0)
    assert metrics["entropy"] == pytest.approx(float(out.losses["constrained"].detach()))
    model.train()
    assert "align_count" not in model(batch).stats  # no diagnostics (host synchronisations) in training steps
    assert collapse_warning({"entropy": 0.05, "argmax_u_offset-1": 95.0, "argmax_u_offset+0": 5.0}) is not None
    assert "s_i-1 for 95%" in collapse_warning({"entropy": 0.05, "argmax_u_offset-1": 95.0, "argmax_u_offset+0": 5.0})
    # confident, but by content
    assert collapse_warning({"entropy": 0.05, "argmax_u_offset-1": 50.0, "argmax_u_offset+0": 50.0}) is None
    assert collapse_warning({"entropy": 0.5, "argmax_u_offset-1": 95.0}) is None


def test_hand_computed_two_candidates_with_padding() -> None:
    # B=1, h=1, V=3 (the third video token is padding), n=2, Lc=3 (caption 1 has one real token)
    block = torch.tensor(
        [
            [[1.0, 3.0, 50.0], [0.0, 40.0, 40.0]],  # video token 0: caption 0 -> max(1, 3) = 3; caption 1 -> 0
            [[2.0, 0.0, 50.0], [1.0, 40.0, 40.0]],  # video token 1: caption 0 -> 2; caption 1 -> 1
            [[99.0, 99.0, 99.0], [99.0, 99.0, 99.0]],  # padded video token: ignored
        ]
    ).view(1, 1, 3, 2, 3)
    cand_mask = torch.tensor([[[True, True, False], [True, False, False]]])
    video_mask = torch.tensor([[True, True, False]])
    z = candidate_scores(block, cand_mask, video_mask)
    assert torch.allclose(z, torch.tensor([[[2.5, 0.5]]]))
    u, entropy = attention_entropy(z)
    u0 = 1 / (1 + math.exp(-2.0))  # softmax(2.5, 0.5)
    assert torch.allclose(u, torch.tensor([[[u0, 1 - u0]]]))
    expected = -(u0 * math.log(u0) + (1 - u0) * math.log(1 - u0))
    assert abs(entropy.item() - expected) < 1e-6
    assert abs(entropy.item() - 0.365334) < 1e-5  # the same number, worked out by hand


@pytest.mark.parametrize("n", [2, 3, 7])
def test_one_hot_gives_zero_and_flat_gives_log_n(n: int) -> None:
    one_hot = torch.full((1, 1, n), -1e4)
    one_hot[..., 0] = 1e4
    assert attention_entropy(one_hot)[1].item() == pytest.approx(0.0, abs=1e-7)
    flat = torch.full((1, 1, n), 0.7)
    assert attention_entropy(flat)[1].item() == pytest.approx(math.log(n), abs=1e-6)


def test_absent_candidates_and_samples_without_candidates() -> None:
    z = torch.tensor([[0.3, float("-inf"), 0.3], [float("-inf")] * 3])
    u, entropy = attention_entropy(z)
    assert entropy[0].item() == pytest.approx(math.log(2))
    assert u[0, 1] == 0 and entropy[1].item() == 0 and not torch.isnan(u).any()


def test_sample_without_candidates_contributes_nothing() -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2), on_negatives=True).eval()
    batch = random_batch(3, batch_size=3, neighbours=[1, 0, 2])  # sample 1 has a single candidate
    loss_all = model(batch).losses["constrained"]
    rng_batch = random_batch(3, batch_size=3, neighbours=[1, 0, 2])
    rng_batch.caption_id[1] = -1  # sample 1: no candidates at all
    assert torch.allclose(model(rng_batch).losses["constrained"], loss_all)
    # the mean is over samples 0 and 2 only
    out = model(batch)
    ent = out.encoder.attention_entropy
    assert torch.allclose(loss_all, (ent[0] + ent[2]) / 2)
    assert ent[1].item() == 0.0


def test_negatives_excluded_by_default() -> None:
    torch.manual_seed(0)
    cfg = tiny_bert_config(layers=2, heads=2)
    batch = random_batch(5, batch_size=6, neighbours=[2, 2, 1, 2, 2, 1])  # samples 2 and 5 are VTM negatives
    off = build_pretraining(cfg, on_negatives=False).eval()
    on = build_pretraining(cfg, on_negatives=True).eval()
    on.load_state_dict(off.state_dict())
    ent = off(batch).encoder.attention_entropy
    pos = batch.vtm_labels == 1
    assert torch.allclose(off(batch).losses["constrained"], ent[pos].mean())
    assert torch.allclose(on(batch).losses["constrained"], ent.mean())
    assert not torch.allclose(ent[pos].mean(), ent.mean())


def test_lambda_weights_the_total() -> None:
    torch.manual_seed(0)
    cfg = tiny_bert_config(layers=2, heads=2)
    batch = random_batch(2, batch_size=4, neighbours=1)
    base = build_pretraining(cfg, lam=0.0).eval()
    heavy = build_pretraining(cfg, lam=2.5).eval()
    heavy.load_state_dict(base.state_dict())
    out0, out1 = base(batch), heavy(batch)
    assert "constrained" not in out0.losses  # lambda 0: not even computed
    assert torch.allclose(out0.losses["total"], out0.losses["mlm"] + out0.losses["vtm"])
    assert torch.allclose(out1.losses["total"], out0.losses["total"] + 2.5 * out1.losses["constrained"])
    # with lambda 0 the loss and u can still be asked for (validation), without entering the total
    diag = base(batch, constrained=True)
    assert "constrained" in diag.losses and diag.encoder.candidate_u is not None
    assert torch.allclose(diag.losses["constrained"], out1.losses["constrained"])
    assert torch.allclose(diag.losses["total"], out0.losses["total"])


def test_no_full_attention_matrix_in_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused path never builds an (L x L) logits tensor: every matmul output is checked."""
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2)).eval()
    batch = random_batch(4, batch_size=3, neighbours=2)
    seq_len = batch.video_mask.shape[1] + batch.text_ids.shape[1]
    shapes: list[tuple[int, ...]] = []
    real_matmul = torch.matmul

    def spy(a: torch.Tensor, b: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = real_matmul(a, b, *args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "matmul", spy)
    model(batch)
    assert shapes, "the loss blocks are computed with torch.matmul"
    assert all(s[-2:] != (seq_len, seq_len) for s in shapes), shapes
    shapes.clear()
    model(batch, keep_logits=True)  # the eager reference does build it
    assert any(s[-2:] == (seq_len, seq_len) for s in shapes)


def test_layout_gathers_each_candidates_tokens() -> None:
    caption_id = torch.tensor([[-1, 0, 0, -1, 1, -1, 2, 2, 2, -1], [-1, -1, 0, -1, 1, 1, -1, -1, -1, -1]])
    index, mask = candidate_layout(caption_id, offset=5)
    assert index.shape == (2, 3, 3)
    assert index[0].tolist() == [[6, 7, 0], [9, 0, 0], [11, 12, 13]]
    assert mask[0].tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert mask[1].tolist() == [[True, False, False], [True, True, False], [False, False, False]]
    assert index[1, :2].tolist() == [[7, 0, 0], [9, 10, 0]]
    assert np.array_equal(mask.sum(-1).numpy(), [[2, 1, 3], [1, 2, 0]])


def test_validation_measures_what_the_video_contributes() -> None:
    from decembert_cli.data.batch import IGNORE_INDEX, TokenType

    torch.manual_seed(1)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2)).eval()
    samples = random_samples(np.random.default_rng(7), batch_size=6, neighbours=1, vtm=True)
    for sample in samples:  # the selected tokens are masked (id 4), so their prediction comes from the context
        for seg in sample.segments:
            seg.ids = [4 if label != IGNORE_INDEX else x for x, label in zip(seg.ids, seg.labels or [])]
    batch = collate(samples, cls_id=2, sep_id=3, pad_id=0)

    def predictions(b: VideoTextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        selected = b.mlm_labels != IGNORE_INDEX
        with torch.no_grad():
            return model.mlm(model.encoder(b).text[selected]).argmax(-1), b.text_type[selected] == int(TokenType.ASR)

    own, _ = predictions(batch)
    labels = batch.mlm_labels.clone()
    labels[batch.mlm_labels != IGNORE_INDEX] = own  # targets = what the model says with its own video
    with torch.no_grad():
        stats = model(dataclasses.replace(batch, mlm_labels=labels)).stats
    same = count = 0
    for i, sample in enumerate(samples):  # naive: one sample at a time, the video of sample i - 1
        if sample.vtm_label != 1:
            continue
        alone, asr = predictions(collate([sample], cls_id=2, sep_id=3, pad_id=0))
        other = dataclasses.replace(sample, video_2d=samples[i - 1].video_2d, video_3d=samples[i - 1].video_3d)
        swapped, _ = predictions(collate([other], cls_id=2, sep_id=3, pad_id=0))
        same += int((alone == swapped)[asr].sum())
        count += int(asr.sum())
    assert int(stats["video_count"]) == int(stats["video_own_correct"]) == count > 10
    assert int(stats["video_swapped_correct"]) == same < count  # a random model's predictions do depend on the video
    model.train()
    assert "video_count" not in model(batch).stats  # validation only
