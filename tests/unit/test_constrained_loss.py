"""The constrained attention loss: fused path == naive reference from full eager logits; hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decembert_cli.model.attention import attention_entropy, candidate_layout, candidate_scores
from tests.helpers import build_pretraining, random_batch, tiny_bert_config


def naive_constrained_loss(logits: list[torch.Tensor], batch, takes_part: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """DESIGN.md §1 written out with loops over samples, layers, heads and candidates."""
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
        entropies = []
        for layer in logits:
            for h in range(layer.shape[1]):
                s = layer[b, h]
                z = []
                for j in sorted(caps):
                    per_video = [torch.max(torch.stack([s[i, c] for c in caps[j]])) for i in video_rows]
                    z.append(torch.stack(per_video).mean())
                u = torch.softmax(torch.stack(z), dim=0)
                entropies.append(-(u * torch.log(u)).sum())
        per_sample.append(torch.stack(entropies).mean())
    return torch.stack(per_sample).mean()


@pytest.mark.parametrize("neighbours", [1, 2, 3, 4, [1, 4, 2, 3, 1]])
def test_fused_equals_naive_reference_with_gradients(neighbours) -> None:  # type: ignore[no-untyped-def]
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
    assert len(eager_out.encoder.logits) == 3 and eager_out.encoder.logits[0].shape[-1] == eager_out.encoder.sequence.shape[1]
    takes_part = batch.video_mask.any(-1) & (eager_out.encoder.candidate_valid.sum(-1) >= 2)
    naive = naive_constrained_loss(eager_out.encoder.logits, batch, takes_part)
    naive_grads = torch.autograd.grad(naive, [p for p in model.parameters()], allow_unused=True)

    assert torch.allclose(fused, naive, atol=1e-5, rtol=0), (fused.item(), naive.item())
    assert 0 < fused.item() < 0.9 * math.log(3)  # far from flat attention
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


def test_no_full_attention_matrix_in_fused_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The fused path never builds an (L x L) logits tensor: every matmul output is checked."""
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config(layers=2, heads=2)).eval()
    batch = random_batch(4, batch_size=3, neighbours=2)
    seq_len = batch.video_mask.shape[1] + batch.text_ids.shape[1]
    shapes: list[tuple[int, ...]] = []
    real_matmul = torch.matmul

    def spy(a, b, *args, **kwargs):  # type: ignore[no-untyped-def]
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
