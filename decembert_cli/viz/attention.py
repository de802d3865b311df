"""The data of the paper's Figure 4: how much attention a clip's video tokens pay to each candidate ASR caption.

For one clip of a pre-training corpus, the sample is built as in pre-training but with nothing
masked and no negative (the clip's own caption and its neighbours are the candidates), encoded on
the eager path, and for every layer and head the attention probability that the clip's real video
tokens put on each candidate caption's tokens is summed over the caption's tokens and averaged over
the video tokens: `mass[layer, head, candidate]`. It sums with the mass on [CLS], [SEP], dense
captions and video to 1 per video token, so captions of different lengths compare as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from decembert_cli import checkpoint as ckpt
from decembert_cli.config import Config
from decembert_cli.config.loader import apply_override, from_dict
from decembert_cli.data.batch import EncoderSample, TokenType
from decembert_cli.data.corpus import PretrainDataset, open_corpus
from decembert_cli.errors import DecembertError
from decembert_cli.inference import candidate_mass, encode_attentions
from decembert_cli.model import build_encoder, build_tokenizer
from decembert_cli.viz.plots import attention, metrics_table

if TYPE_CHECKING:
    from decembert_cli.data.clip_table import ClipTable


@dataclass
class AttentionExample:
    video_id: str
    clip: int  # caption index of the clip in its video
    mass: np.ndarray  # (layers, heads, candidates): attention from video tokens to each candidate caption
    candidates: list[str]  # the candidate ASR captions, in order (s_{i-k} .. s_{i+k})
    own: int  # index of the clip's own caption among the candidates
    aligned: int  # index of the caption that truly describes the clip (-1: unknown or none)
    dense: list[str]  # the dense captions in the sequence
    checkpoint: str
    step: int

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mass"] = self.mass.round(6).tolist()
        return out


def attention_example(
    checkpoint: Path,
    video_id: str,
    clip: int | None = None,
    overrides: Sequence[str] = (),
    table: ClipTable | None = None,
) -> AttentionExample:
    """Figure 4's data for `video_id`'s clip `clip` (default: its middle clip) under a pre-training
    checkpoint; `table`: the corpus when already opened (else the checkpoint's corpus is read)."""
    file = ckpt.resolve(checkpoint)
    payload = ckpt.load_checkpoint(file)
    config = _pretrain_config(file, payload, overrides)
    tokenizer = build_tokenizer(config.model)
    if table is None:
        table = run_corpus(config, payload.get("meta", {}), tokenizer)
    encoder = _checkpoint_encoder(payload, config)
    return clip_attention(
        encoder, table, _find_video(table, video_id), clip, config, tokenizer, str(file), int(payload.get("step", 0))
    )


def clip_attention(
    encoder: torch.nn.Module,
    table: ClipTable,
    v: int,
    clip: int | None,
    config: Config,
    tokenizer: Any,
    source: str,
    step: int,
) -> AttentionExample:
    """Figure 4's data for table row v's clip `clip` (default: the middle one) under `encoder`
    (`config.data` with nothing masked and no negative); `source` and `step` label the picture."""
    n = table.clip_count(v)
    clip = n // 2 if clip is None else clip
    if not 0 <= clip < n:
        raise DecembertError(f"--clip {clip}: video {table.video_ids[v]} has clips 0 to {n - 1}")
    sample = _clip_sample(table, v, clip, config, tokenizer)

    batch, attentions = encode_attentions(encoder, tokenizer, config.model.max_video_tokens, sample)
    k = config.data.neighbours
    lo, hi = max(0, clip - k), min(n - 1, clip + k)
    # the candidates as the model read them (an index keeps WordPiece ids, not the raw text)
    candidates = [
        cast(str, tokenizer.decode(table.caption_ids(v, j, config.data.max_caption_tokens))) for j in range(lo, hi + 1)
    ]
    aligned = sample.aligned if sample.own_candidate >= 0 else -1
    # one sequence of ids decodes to one string (decode is annotated str | list[str] for batches too)
    dense = [cast(str, tokenizer.decode(seg.ids)) for seg in sample.segments if seg.kind == TokenType.DENSE]
    mass = candidate_mass(attentions, batch.video_mask, batch.caption_id, len(candidates))
    return AttentionExample(table.video_ids[v], clip, mass, candidates, clip - lo, aligned, dense, source, step)


def run_corpus(config: Config, meta: dict[str, Any], tokenizer: Any) -> ClipTable:
    """The corpus a pre-training run read (its index when it has one)."""
    table, _report = open_corpus(
        meta.get("corpus", "howto100m"),
        config.data,
        (config.model.feature_dim_2d, config.model.feature_dim_3d),
        tokenizer,
        strict=False,
    )
    return table


def _pretrain_config(file: Path, payload: dict[str, Any], overrides: Sequence[str]) -> Config:
    """The pre-training checkpoint's config with `overrides`, no init weights, nothing masked and no negative."""
    meta = payload.get("meta", {})
    if meta.get("kind") != "pretrain":
        raise DecembertError(
            f"{file} is a {meta.get('kind') or 'unknown'} checkpoint; "
            "attention maps are drawn for pre-training checkpoints"
        )
    config = from_dict(Config, payload["config"])
    for assignment in overrides:
        config = apply_override(config, assignment)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, init="none"),
        data=dataclasses.replace(config.data, mask_prob=0.0, negative_prob=0.0),
    )


def _find_video(table: ClipTable, video_id: str) -> int:
    """The table row of `video_id`; DecembertError naming a few others when it is not there."""
    v = table.find(video_id)
    if v is None:
        shown = ", ".join(table.video_ids[:5])
        raise DecembertError(
            f"video '{video_id}' is not among the corpus' {len(table)} usable videos (e.g. {shown}); "
            "pass one of them with --video"
        )
    return v


def _clip_sample(table: ClipTable, v: int, clip: int, config: Config, tokenizer: Any) -> EncoderSample:
    """The pre-training sample of video v's clip `clip`, candidates kept in time order."""
    # the picture keeps time order (the model sees no order: candidates share positions)
    data = PretrainDataset(
        table,
        tokenizer,
        config.data,
        videos=np.array([v]),
        seed=config.seed,
        max_video_tokens=config.model.max_video_tokens,
        shuffle_candidates=False,
    )
    sample, _info = data.build(0, clip)
    return sample


def _checkpoint_encoder(payload: dict[str, Any], config: Config) -> torch.nn.Module:
    encoder, _ = build_encoder(config.model)
    state = {k[len("encoder.") :]: v for k, v in payload["model"].items() if k.startswith("encoder.")}
    encoder.load_state_dict(state)
    return encoder


Pictures = Callable[[torch.nn.Module, int, Path, dict[str, float]], dict[str, Path]]


def validation_pictures(attention_of: tuple[Config, ClipTable, int, Any] | None = None) -> Pictures:
    """What a training run shows at each validation in TensorBoard and W&B (`Job.pictures`): the metrics as a
    table, and with `attention_of` = (config, table, row, tokenizer) Figure 4 of the model being trained for
    that table row's middle clip (nothing masked, no negative)."""
    shown = None
    if attention_of is not None:
        config, table, row, tokenizer = attention_of
        data = dataclasses.replace(config.data, mask_prob=0.0, negative_prob=0.0)
        shown = (dataclasses.replace(config, data=data), table, row, tokenizer)

    def pictures(model: torch.nn.Module, step: int, folder: Path, metrics: dict[str, float]) -> dict[str, Path]:
        out = {"val/metrics": metrics_table(metrics, folder / "val.png", f"validation at step {step}")}
        if shown is not None:
            config, table, row, tokenizer = shown
            encoder = cast(torch.nn.Module, model.encoder)
            example = clip_attention(encoder, table, row, None, config, tokenizer, "training", step)
            out["val/attention"] = attention([example], folder / "attention.png", titles=[f"step {step}"])
        return out

    return pictures
