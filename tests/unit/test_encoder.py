"""The encoder: BERT equivalence, the packaged `small` model, batch independence, config switches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from decembert_cli.config import Config, load_config
from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate
from decembert_cli.model.encoder import separate_candidates
from tests.helpers import build_pretraining, random_batch, random_samples, tiny_bert_config


def _text_only_batch(ids: torch.Tensor, mask: torch.Tensor, dim: int = 2048) -> VideoTextBatch:
    samples = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        n = int(sum(m))
        samples.append(
            EncoderSample(torch.zeros(0, dim), torch.zeros(0, dim), [TextSegment(row[1 : n - 1], TokenType.ASR)])
        )
    return collate(samples, cls_id=int(ids[0, 0]), sep_id=int(ids[0, int(mask[0].sum()) - 1]), pad_id=0)


def test_text_only_output_equals_bert_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from decembert_cli.config import ModelConfig
    from decembert_cli.model import build_encoder

    torch.manual_seed(0)
    bert_cfg = BertConfig(
        vocab_size=200,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    BertForMaskedLM(bert_cfg).save_pretrained(tmp_path)  # a tiny random transformers checkpoint
    reference = BertModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()

    encoder, mlm_state = build_encoder(ModelConfig(init=str(tmp_path)))
    encoder.eval()
    assert encoder.bert.config.num_hidden_layers == 3 and encoder.hidden_size == 48
    assert set(mlm_state) == {
        "transform.dense.weight",
        "transform.dense.bias",
        "transform.LayerNorm.weight",
        "transform.LayerNorm.bias",
        "bias",
    }

    ids = torch.randint(5, 200, (3, 12))
    ids[:, 0] = 2  # our collate starts the text with [CLS] (id 2 here)
    ids[:, -1] = 3  # and appends [SEP] (id 3 here) after the caption
    mask = torch.ones(3, 12, dtype=torch.long)
    ids[1, 8:] = 0
    mask[1, 8:] = 0
    ids[1, 7] = 3
    batch = _text_only_batch(ids, mask, dim=2048)
    assert torch.equal(batch.text_ids, ids)
    with torch.no_grad():
        ours = encoder(batch).sequence  # (B, Lt, H): no video tokens
        theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)
    # the added video token-type row is new; BERT's two rows are copied as they are
    assert torch.equal(
        encoder.bert.embeddings.token_type_embeddings.weight[:2], reference.embeddings.token_type_embeddings.weight
    )


def test_small_loads_offline_with_the_packaged_vocabulary() -> None:
    from safetensors.torch import load_file

    from decembert_cli.model import build_encoder, build_tokenizer
    from decembert_cli.packaged import minilm_dir

    cfg = load_config(Config).model  # the default arch is small
    assert cfg.arch == "small"
    encoder, _ = build_encoder(cfg)
    tokenizer = build_tokenizer(cfg)
    assert (encoder.bert.config.num_hidden_layers, encoder.hidden_size) == (6, 384)
    shipped = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(encoder.bert.encoder.layer[5].attention.self.query.weight, shipped[key])
    assert tokenizer.tokenize("Unaffable onions!") == ["una", "##ffa", "##ble", "onions", "!"]
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[MASK]", "[PAD]"]) == [101, 102, 103, 0]
    assert len(tokenizer) == encoder.word_embeddings.num_embeddings == 30522


def test_encoding_does_not_depend_on_batch_padding() -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config()).eval()
    rng = np.random.default_rng(0)
    from tests.helpers import random_samples

    samples = random_samples(rng, batch_size=4, neighbours=[1, 3, 2, 1])
    together = collate(samples, cls_id=2, sep_id=3)
    alone = collate(samples[:1], cls_id=2, sep_id=3)
    assert (
        together.video_mask.shape[1] > alone.video_mask.shape[1] or together.text_ids.shape[1] > alone.text_ids.shape[1]
    )
    with torch.no_grad():
        a, b = model(together), model(alone)
    assert torch.allclose(a.encoder.pooled[0], b.encoder.pooled[0], atol=1e-5)
    va, vb = together.video_mask[0].sum(), alone.video_mask[0].sum()
    assert torch.allclose(a.encoder.sequence[0, :va], b.encoder.sequence[0, :vb], atol=1e-5)
    assert torch.allclose(a.encoder.attention_entropy[0], b.encoder.attention_entropy[0], atol=1e-5)


def test_eager_and_fused_agree_on_every_output() -> None:
    torch.manual_seed(0)
    fused = build_pretraining(tiny_bert_config(), eager=False).eval()
    eager = build_pretraining(tiny_bert_config(), eager=True).eval()
    eager.load_state_dict(fused.state_dict())
    batch = random_batch(11, batch_size=4, neighbours=2)
    with torch.no_grad():
        a, b = fused(batch), eager(batch)
    for key in a.losses:
        assert torch.allclose(a.losses[key], b.losses[key], atol=1e-5), key
    assert a.encoder.attentions is None
    with torch.no_grad():
        maps = fused(batch, output_attentions=True).encoder.attentions  # asking for maps takes the eager path
    assert len(maps) == 3 and torch.allclose(maps[0].sum(-1), torch.ones(()), atol=1e-5)
    # padded keys get no attention
    keys = torch.cat([batch.video_mask, batch.text_mask], 1)
    assert maps[0].masked_select(~keys[:, None, None, :].expand_as(maps[0])).abs().max() < 1e-6


def test_pretraining_stats_count_mlm_by_segment() -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config()).eval()
    batch = random_batch(12, batch_size=5, neighbours=1)
    out = model(batch)
    labels = batch.mlm_labels != -100
    assert out.stats["mlm_count_asr"] == (labels & (batch.text_type == int(TokenType.ASR))).sum()
    assert out.stats["mlm_count_dense"] == (labels & (batch.text_type == int(TokenType.DENSE))).sum()
    assert out.stats["vtm_count"] == 5
    assert 0 <= out.stats["vtm_correct"] <= 5


def test_vtm_on_the_unmasked_text_reads_the_ids_before_masking() -> None:
    """loss.vtm_input = unmasked: VTM's logits are those of a pass over the text before masking (the MLM pass
    keeps its masked input); masked (the paper's code): the MLM pass's own; no masks: both the same."""
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config()).eval()
    rng = np.random.default_rng(4)
    samples = random_samples(rng, batch_size=6, neighbours=1)
    for s in samples:  # mask what the labels mark ([MASK] = 4), keeping the ids before masking
        for seg in s.segments:
            seg.original = list(seg.ids)
            seg.ids = [4 if lab != -100 else t for t, lab in zip(seg.ids, seg.labels or [])]
    batch = collate(samples, cls_id=2, sep_id=3, pad_id=0)
    assert batch.unmasked_ids is not None and not torch.equal(batch.unmasked_ids, batch.text_ids)
    labelled = batch.mlm_labels != -100
    assert torch.equal(batch.unmasked_ids[labelled], batch.mlm_labels[labelled])
    assert torch.equal(batch.unmasked_ids[~labelled], batch.text_ids[~labelled])

    def vtm_sum(vtm_input: str, b: VideoTextBatch) -> torch.Tensor:
        model.vtm_input = vtm_input
        return model(b, constrained=False).sums["vtm"]

    clean = dataclasses.replace(batch, text_ids=batch.unmasked_ids)
    assert torch.allclose(vtm_sum("unmasked", batch), vtm_sum("masked", clean))
    assert not torch.allclose(vtm_sum("unmasked", batch), vtm_sum("masked", batch))
    model.vtm_input = "unmasked"  # MLM is still scored on the masked input
    assert torch.allclose(model(batch, constrained=False).sums["mlm"], vtm_mlm := model(batch).sums["mlm"])
    model.vtm_input = "masked"
    assert torch.allclose(model(batch).sums["mlm"], vtm_mlm)


def test_vtm_weight_scales_vtm_in_the_total_loss_only() -> None:
    torch.manual_seed(0)
    model = build_pretraining(tiny_bert_config()).eval()
    batch = random_batch(5, batch_size=4, neighbours=1)
    out = model(batch)
    model.vtm_weight = 3.0
    heavier = model(batch)
    assert heavier.weights["vtm"] == 3.0
    for name in ("mlm", "vtm", "constrained"):
        assert torch.allclose(heavier.losses[name], out.losses[name])
    assert torch.allclose(heavier.losses["total"] - out.losses["total"], 2.0 * out.losses["vtm"], atol=1e-6)
    from decembert_cli.errors import DecembertError
    from decembert_cli.model import build_pretraining_model
    from decembert_cli.model.pretraining import DecembertForPretraining

    assert build_pretraining_model(load_config(Config, "tiny", ["loss.vtm_weight=3"])).vtm_weight == 3.0
    assert load_config(Config, "paper").loss.vtm_weight == 1.0
    with pytest.raises(DecembertError, match="loss.vtm_weight"):
        DecembertForPretraining(model.encoder, constrained_lambda=0, constrained_on_negatives=False, vtm_weight=-1)


def test_video_longer_than_the_limit_is_uniformly_downsampled() -> None:
    from decembert_cli.data.batch import uniform_indices

    assert uniform_indices(5, 100).tolist() == [0, 1, 2, 3, 4]
    idx = uniform_indices(250, 100)
    assert len(idx) == 100 and idx[0] == 0 and idx[-1] == 249 and (idx.diff() > 0).all()
    sample = EncoderSample(
        torch.arange(250.0)[:, None].repeat(1, 4), torch.zeros(250, 4), [TextSegment([7], TokenType.ASR)]
    )
    batch = collate([sample], cls_id=2, sep_id=3, max_video_tokens=100)
    assert batch.video_2d.shape == (1, 100, 4) and batch.video_2d[0, -1, 0] == 249


def test_model_config_switches_change_the_model() -> None:
    from decembert_cli.model import build_pretraining_model

    base = load_config(Config, "tiny")
    model = build_pretraining_model(base)
    assert model.encoder.bert.config.hidden_size == 64 and model.encoder.eager is None  # auto
    assert not model.encoder.uses_eager(torch.device("cpu")) and not model.encoder.uses_eager(torch.device("cuda"))
    eager = build_pretraining_model(load_config(Config, "tiny", ["model.attention=eager"]))
    assert eager.encoder.eager and eager.encoder.uses_eager(torch.device("cuda"))
    fused = build_pretraining_model(load_config(Config, "tiny", ["model.attention=fused"]))
    assert not fused.encoder.uses_eager(torch.device("cpu"))
    from decembert_cli.model import encoder as encoder_module

    measured = dict(encoder_module.AUTO_ATTENTION)
    try:  # auto follows the table of measurements
        encoder_module.AUTO_ATTENTION["cpu"] = "eager"
        assert model.encoder.uses_eager(torch.device("cpu")) and not fused.encoder.uses_eager(torch.device("cpu"))
    finally:
        encoder_module.AUTO_ATTENTION.update(measured)
    dims = build_pretraining_model(
        load_config(Config, "tiny", ["model.feature_dim_2d=512", "model.feature_dim_3d=256"])
    )
    assert dims.encoder.video.mlp[0].in_features == 768
    limited = build_pretraining_model(load_config(Config, "tiny", ["model.max_video_tokens=7"]))
    assert limited.encoder.max_video_tokens == 7
    drop = build_pretraining_model(load_config(Config, "tiny", ["model.dropout=0.0"]))
    assert drop.encoder.bert.config.attention_probs_dropout_prob == 0.0
    assert model.encoder.bert.config.hidden_dropout_prob == 0.1
    loss = build_pretraining_model(
        load_config(Config, "tiny", ["loss.constrained_lambda=0.25", "loss.constrained_on_negatives=true"])
    )
    assert loss.constrained_lambda == 0.25 and loss.constrained_on_negatives
    assert (model.constrained_scores, model.constrained_direction) == ("logits", "v2t")  # the paper's form by default
    released = build_pretraining_model(
        load_config(
            Config,
            "tiny",
            ["loss.constrained_scores=probs", "loss.constrained_direction=both", "loss.constrained_warmup=50"],
        )
    )
    assert (released.constrained_scores, released.constrained_direction, released.constrained_warmup) == (
        "probs",
        "both",
        50,
    )


def test_dropout_zero_makes_training_mode_deterministic() -> None:
    from decembert_cli.model import build_pretraining_model
    from tests.helpers import random_samples

    batch = collate(random_samples(np.random.default_rng(0), batch_size=2, neighbours=1, dim=2048), cls_id=2, sep_id=3)
    for dropout, same in [(0.0, True), (0.3, False)]:
        model = build_pretraining_model(load_config(Config, "tiny", [f"model.dropout={dropout}"])).train()
        a, b = model(batch).losses["total"], model(batch).losses["total"]
        assert torch.allclose(a, b) == same


def test_too_many_video_tokens_is_a_clear_error() -> None:
    from decembert_cli.errors import DecembertError

    model = build_pretraining(tiny_bert_config())
    model.encoder.max_video_tokens = 3
    with pytest.raises(DecembertError, match="at most 3"):
        model(random_batch(0, batch_size=2, neighbours=1))


def test_bad_init_is_a_clear_error(tmp_path: Path) -> None:
    from decembert_cli.config import ModelConfig
    from decembert_cli.errors import DecembertError
    from decembert_cli.model import build_encoder

    with pytest.raises(DecembertError, match="model.init="):
        build_encoder(ModelConfig(init=str(tmp_path / "missing")))


def test_tokenizer_option_loads_from_a_directory(tmp_path: Path) -> None:
    import shutil

    from decembert_cli.config import ModelConfig
    from decembert_cli.errors import DecembertError
    from decembert_cli.model import build_tokenizer
    from decembert_cli.packaged import minilm_dir

    vocab = [line for line in (minilm_dir() / "vocab.txt").read_text().splitlines()][:2000]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    small_vocab = build_tokenizer(ModelConfig(arch="tiny", init="none", tokenizer=str(tmp_path)))
    assert len(small_vocab) == 2000
    assert len(build_tokenizer(ModelConfig(arch="tiny", init="none"))) == 30522
    shutil.rmtree(tmp_path)
    with pytest.raises(DecembertError, match="cannot load a tokenizer"):
        build_tokenizer(ModelConfig(tokenizer=str(tmp_path)))


def test_separate_candidates_keeps_each_caption_with_its_sep_and_hides_padding() -> None:
    # 2 video tokens (the second is padding), then text: [CLS] a a [SEP] b [SEP] d [SEP] [PAD]
    caption_id = torch.tensor([[-1, 0, 0, -1, 1, -1, -1, -1, -1]])
    mask = torch.tensor([[True, False, True, True, True, True, True, True, True, True, False]])
    allowed = separate_candidates(mask, caption_id)[0, 0]
    assert allowed.shape == (11, 11)
    a, sep_a, b, sep_b, dense, cls = [3, 4], 5, 6, 7, 8, 2
    for i in [*a, sep_a]:
        assert not allowed[i, b] and not allowed[i, sep_b]  # caption 0 and its [SEP] never see caption 1's
        assert allowed[i, a[0]] and allowed[i, sep_a] and allowed[i, cls] and allowed[i, dense] and allowed[i, 0]
    assert not allowed[b, a[1]] and not allowed[sep_b, sep_a] and allowed[sep_b, b]
    for i in (0, cls, dense):  # video, [CLS] and other text see every candidate
        assert allowed[i, a[0]] and allowed[i, b] and allowed[i, sep_a] and allowed[i, sep_b]
    assert not allowed[:, 1].any() and not allowed[:, 10].any()  # padding is never attended


def test_separate_video_positions_give_video_tokens_their_own_table() -> None:
    """model.video_positions = separate: a video token's input is its own position row and none of BERT's
    (changing BERT's rows changes only the text), shared: BERT's row of the same index (video token 0 gets [CLS]'s)."""
    from decembert_cli.model.encoder import DecembertEncoder

    batch = random_batch(0, batch_size=3, neighbours=1)
    captured: list[torch.Tensor] = []

    def embeddings(video_positions: str) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        encoder = DecembertEncoder(
            tiny_bert_config(), dim_2d=16, dim_3d=16, max_video_tokens=100, eager=True, video_positions=video_positions
        ).eval()
        hook = encoder.bert.embeddings.register_forward_hook(lambda _m, _i, out: captured.append(out))
        encoder(batch)
        before = captured.pop()
        with torch.no_grad():
            table = encoder.bert.embeddings.position_embeddings.weight
            table.add_(torch.randn_like(table))  # not a constant: the LayerNorm would take that away
        encoder(batch)
        hook.remove()
        return before, captured.pop()

    v = batch.video_mask.shape[1]
    before, after = embeddings("separate")
    assert torch.allclose(before[:, :v], after[:, :v], atol=1e-5)  # BERT's table no longer reaches the video
    assert not torch.allclose(before[:, v:], after[:, v:], atol=1e-3)
    before, after = embeddings("shared")
    assert not torch.allclose(before[:, :v], after[:, :v], atol=1e-3)
    assert "video_positions" in dict(
        DecembertEncoder(
            tiny_bert_config(), dim_2d=16, dim_3d=16, max_video_tokens=100, eager=True, video_positions="separate"
        ).named_children()
    )
