"""Encoder size presets and initialisation from BERT checkpoints (hub, local dir or packaged)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from decembert_cli.errors import DecembertError
from decembert_cli.packaged import MINILM_PACKAGE, minilm_dir

if TYPE_CHECKING:
    from transformers import BertConfig

    from decembert_cli.config import ModelConfig


@dataclass(frozen=True)
class Arch:
    hidden_size: int  # transformer width
    num_layers: int  # transformer layers
    num_heads: int  # attention heads per layer
    intermediate_size: int  # feed-forward width
    default_init: str  # what `model.init: auto` means for this size


ARCHS: dict[str, Arch] = {
    "base": Arch(768, 12, 12, 3072, default_init="bert-base-uncased"),  # the paper's encoder
    "small": Arch(384, 6, 12, 1536, default_init=MINILM_PACKAGE),  # MiniLM-L6, offline
    "tiny": Arch(64, 2, 4, 128, default_init="none"),  # random, for tests
}
VOCAB_SIZE = 30522  # BERT uncased WordPiece
MAX_POSITIONS = 512
NUM_TOKEN_TYPES = 3  # ASR, dense caption, video (see data.batch.TokenType)


def state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state (names, shapes, dtypes, values): the identity of loaded weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def resolve_init(cfg: ModelConfig) -> str:
    """`model.init` with `auto` replaced by the arch's default."""
    return ARCHS[cfg.arch].default_init if cfg.init == "auto" else cfg.init


def resolve_tokenizer(cfg: ModelConfig) -> str:
    """`model.tokenizer` with `auto` replaced: the init checkpoint's tokenizer, else the packaged vocabulary."""
    if cfg.tokenizer != "auto":
        return cfg.tokenizer
    init = resolve_init(cfg)
    if init == "none":
        return MINILM_PACKAGE
    if Path(init).is_dir() and not any((Path(init) / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        return MINILM_PACKAGE  # a weights-only directory (e.g. a saved BertConfig + weights)
    return init


def random_bert_config(cfg: ModelConfig) -> BertConfig:
    from transformers import BertConfig

    arch = ARCHS[cfg.arch]
    return BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=NUM_TOKEN_TYPES,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = getattr(hf_logging, "is_progress_bar_enabled", lambda: True)()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class PretrainedBert:
    config: BertConfig  # the checkpoint's config, adapted: 3 token types, our dropout
    encoder_state: dict[str, torch.Tensor]  # BertModel keys (no pooler)
    mlm_state: dict[str, torch.Tensor]  # transform.* and bias of the MLM head, when the checkpoint has them
    source: str  # where it came from


def load_pretrained_bert(source: str, dropout: float) -> PretrainedBert:
    """Read a BERT checkpoint (hub id, local dir, or the packaged MiniLM) through transformers."""
    from transformers import BertForMaskedLM

    location = str(minilm_dir()) if source == MINILM_PACKAGE else source
    try:
        with _quiet_transformers():
            # with output_loading_info, from_pretrained returns (model, loading info); its annotation says model only
            model, info = cast(
                tuple[BertForMaskedLM, dict[str, Any]],
                BertForMaskedLM.from_pretrained(location, output_loading_info=True),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise DecembertError(
            f"cannot load BERT weights from model.init='{source}' "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            f"Use a local directory with config.json and weights, '{MINILM_PACKAGE}' (offline), or 'none'"
        ) from exc
    if model.config.model_type != "bert":
        raise DecembertError(
            f"model.init='{source}' is a {model.config.model_type} model; DeCEMBERT needs a BERT checkpoint"
        )
    missing = set(info.get("missing_keys", []))
    config = model.config
    config.type_vocab_size = NUM_TOKEN_TYPES
    config.hidden_dropout_prob = dropout
    config.attention_probs_dropout_prob = dropout
    state = model.state_dict()
    encoder_state = {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.")}
    mlm_state = {}
    head_keys = {
        "transform.dense.weight",
        "transform.dense.bias",
        "transform.LayerNorm.weight",
        "transform.LayerNorm.bias",
        "bias",
    }
    for key in head_keys:
        full = f"cls.predictions.{key}"
        if full in state and full not in missing:
            mlm_state[key] = state[full]
    if set(mlm_state) != head_keys:
        mlm_state = {}  # a partial head is no head: train it from scratch
    return PretrainedBert(config=config, encoder_state=encoder_state, mlm_state=mlm_state, source=source)


def copy_bert_weights(bert: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a BertModel state into ours: identical except token types (BERT has 2 rows, we have 3)."""
    own = bert.state_dict()
    types_key = "embeddings.token_type_embeddings.weight"
    loadable = {}
    for key, value in state.items():
        if key not in own:
            continue  # e.g. the pooler, which we do not use
        if key == types_key:
            merged = own[key].clone()
            rows = min(value.shape[0], merged.shape[0])
            merged[:rows] = value[:rows]  # rows 0/1 = sentence A/B = ASR/dense; the video row stays fresh
            value = merged
        if own[key].shape != value.shape:
            raise DecembertError(
                f"checkpoint tensor {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
        loadable[key] = value
    absent = sorted(set(own) - set(loadable) - {"embeddings.position_ids", "embeddings.token_type_ids"})
    if absent:
        raise DecembertError(f"the BERT checkpoint lacks {len(absent)} encoder tensors, first: {absent[0]}")
    bert.load_state_dict(loadable, strict=False)
