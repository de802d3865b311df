"""The shared encoder, its generic heads and the pre-training model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decembert_cli.data.tokenizer import load_tokenizer
from decembert_cli.errors import DecembertError
from decembert_cli.model.weights import (
    copy_bert_weights,
    load_pretrained_bert,
    random_bert_config,
    resolve_init,
    resolve_tokenizer,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from decembert_cli.config import Config, ModelConfig
    from decembert_cli.model.encoder import DecembertEncoder
    from decembert_cli.model.pretraining import DecembertForPretraining


# model.attention -> DecembertEncoder's `eager` (None: chosen per device, model.encoder.AUTO_ATTENTION)
EAGER: dict[str, bool | None] = {"auto": None, "eager": True, "fused": False}


def build_encoder(cfg: ModelConfig, bert_config: dict | None = None) -> tuple[DecembertEncoder, dict]:
    """The encoder described by `cfg`, initialised as `model.init` says.

    `bert_config`: the BertConfig (as a dict) of a saved model, whose weights are loaded afterwards:
    the encoder then has exactly that architecture and no weights are read here.
    Returns (encoder, MLM head state from the checkpoint or {}).
    """
    # lazy: this __init__ runs before every model.* submodule; the encoder here would add ~5 s (transformers'
    # BERT) to each import of model.weights, which features/, densecap/ and checkpoint make without it
    from decembert_cli.model.encoder import DecembertEncoder

    if bert_config is not None:
        from transformers import BertConfig

        saved = BertConfig.from_dict(
            {**bert_config, "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout}
        )
        encoder = DecembertEncoder(
            saved,
            dim_2d=cfg.feature_dim_2d,
            dim_3d=cfg.feature_dim_3d,
            max_video_tokens=cfg.max_video_tokens,
            eager=EAGER[cfg.attention],
            video_positions=cfg.video_positions,
        )
        return encoder, {}
    init = resolve_init(cfg)
    pretrained = None if init == "none" else load_pretrained_bert(init, cfg.dropout)
    config = pretrained.config if pretrained else random_bert_config(cfg)
    encoder = DecembertEncoder(
        config,
        dim_2d=cfg.feature_dim_2d,
        dim_3d=cfg.feature_dim_3d,
        max_video_tokens=cfg.max_video_tokens,
        eager=EAGER[cfg.attention],
        video_positions=cfg.video_positions,
    )
    if pretrained:
        copy_bert_weights(encoder.bert, pretrained.encoder_state)
    encoder.video.match_scale(encoder.word_embeddings)
    return encoder, (pretrained.mlm_state if pretrained else {})


def build_pretraining_model(config: Config, bert_config: dict | None = None) -> DecembertForPretraining:
    """The pre-training model; `bert_config`: a saved model's architecture (its weights are loaded afterwards)."""
    # lazy: as build_encoder's import of the encoder
    from decembert_cli.model.pretraining import DecembertForPretraining

    encoder, mlm_state = build_encoder(config.model, bert_config=bert_config)
    model = DecembertForPretraining(
        encoder,
        constrained_lambda=config.loss.constrained_lambda,
        constrained_on_negatives=config.loss.constrained_on_negatives,
        constrained_warmup=config.loss.constrained_warmup,
        constrained_scores=config.loss.constrained_scores,
        constrained_direction=config.loss.constrained_direction,
        vtm_input=config.loss.vtm_input,
        vtm_weight=config.loss.vtm_weight,
    )
    if mlm_state:
        model.mlm.load_state_dict(mlm_state)
    return model


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(resolve_tokenizer(cfg))


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, encoder: DecembertEncoder) -> None:
    """A clear error when the tokenizer can produce ids the encoder has no embedding for."""
    rows = encoder.word_embeddings.num_embeddings
    if len(tokenizer) > rows:
        raise DecembertError(
            f"the tokenizer has {len(tokenizer)} tokens but the encoder embeds {rows}; "
            "set model.tokenizer to the tokenizer of model.init"
        )
