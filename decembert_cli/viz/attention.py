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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from decembert_cli.data.batch import EncoderSample, TokenType, VideoTextBatch
from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    from decembert_cli.config import Config
    from decembert_cli.data.corpus import VideoRecord


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


def candidate_mass(
    attentions: tuple[torch.Tensor, ...], video_mask: torch.Tensor, caption_id: torch.Tensor, candidates: int
) -> np.ndarray:
    """(layers, heads, candidates) for sample 0: per layer (1, heads, L, L) maps with the video block first."""
    v = video_mask.shape[1]
    rows = video_mask[0].nonzero().squeeze(-1)  # real video tokens
    out = []
    for att in attentions:
        a = att[0][:, rows].float()  # (heads, V_real, L)
        per_candidate = [
            a[:, :, v:][:, :, caption_id[0] == j].sum(-1).mean(-1) for j in range(candidates)
        ]  # each (heads,)
        out.append(torch.stack(per_candidate, dim=-1))  # (heads, candidates)
    return torch.stack(out).cpu().numpy()


def attention_example(
    checkpoint: Path,
    video_id: str,
    clip: int | None = None,
    overrides: Sequence[str] = (),
    records: list | None = None,
) -> AttentionExample:
    """Figure 4's data for `video_id`'s clip `clip` (default: its middle clip) under a pre-training
    checkpoint; `records`: the corpus' videos when already opened (else the checkpoint's corpus is read)."""
    from decembert_cli import checkpoint as ckpt
    from decembert_cli.data.corpus import open_corpus
    from decembert_cli.model import build_tokenizer

    file = ckpt.resolve(checkpoint)
    payload = ckpt.load_checkpoint(file)
    meta = payload.get("meta", {})
    config = _pretrain_config(file, payload, overrides)
    if records is None:
        records, _report = open_corpus(
            meta.get("corpus", "howto100m"),
            config.data,
            (config.model.feature_dim_2d, config.model.feature_dim_3d),
            strict=False,
        )
    record = _find_record(records, video_id)
    n = len(record.captions)
    clip = n // 2 if clip is None else clip
    if not 0 <= clip < n:
        raise DecembertError(f"--clip {clip}: video {video_id} has clips 0 to {n - 1}")
    tokenizer = build_tokenizer(config.model)
    sample = _clip_sample(record, clip, config, tokenizer)
    batch, attentions = _encode(sample, payload, config, tokenizer)
    k = config.data.neighbours
    lo, hi = max(0, clip - k), min(n - 1, clip + k)
    candidates = list(record.captions.text[lo : hi + 1])
    aligned = _aligned_candidate(record, clip, lo, hi)
    # one sequence of ids decodes to one string (decode is annotated str | list[str] for batches too)
    dense = [cast(str, tokenizer.decode(seg.ids)) for seg in sample.segments if seg.kind == TokenType.DENSE]
    mass = candidate_mass(attentions, batch.video_mask, batch.caption_id, len(candidates))
    return AttentionExample(
        video_id, clip, mass, candidates, clip - lo, aligned, dense, str(file), int(payload.get("step", 0))
    )


def _pretrain_config(file: Path, payload: dict[str, Any], overrides: Sequence[str]) -> Config:
    """The pre-training checkpoint's config with `overrides`, no init weights, nothing masked and no negative."""
    from decembert_cli.config import Config
    from decembert_cli.config.loader import apply_override, from_dict

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


def _find_record(records: list, video_id: str) -> VideoRecord:
    """The corpus record of `video_id`; DecembertError naming a few others when it is not there."""
    record = next((r for r in records if r.video_id == video_id), None)
    if record is None:
        shown = ", ".join(r.video_id for r in records[:5])
        raise DecembertError(
            f"video '{video_id}' is not among the corpus' {len(records)} usable videos (e.g. {shown}); "
            "pass one of them with --video"
        )
    return record


def _clip_sample(record: VideoRecord, clip: int, config: Config, tokenizer: Any) -> EncoderSample:
    """The pre-training sample of the record's clip `clip`, candidates kept in time order."""
    from decembert_cli.data.corpus import PretrainDataset

    # the picture keeps time order (the model sees no order: candidates share positions)
    data = PretrainDataset(
        [record],
        tokenizer,
        config.data,
        seed=config.seed,
        max_video_tokens=config.model.max_video_tokens,
        shuffle_candidates=False,
    )
    index = int(np.flatnonzero(data.clips[:, 1] == clip)[0])
    sample, _info = data.build(0, index)
    return sample


def _encode(
    sample: EncoderSample, payload: dict[str, Any], config: Config, tokenizer: Any
) -> tuple[VideoTextBatch, tuple[torch.Tensor, ...]]:
    """(batch, attentions): the sample collated and run through the checkpoint's encoder on the eager path."""
    from decembert_cli.data.batch import collate
    from decembert_cli.model import build_encoder

    encoder, _ = build_encoder(config.model)
    state = {k[len("encoder.") :]: v for k, v in payload["model"].items() if k.startswith("encoder.")}
    encoder.load_state_dict(state)
    encoder.eval()
    batch = collate(
        [sample],
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
        max_video_tokens=config.model.max_video_tokens,
    )
    with torch.no_grad():
        out = encoder(batch, output_attentions=True)
    return batch, out.attentions


def _aligned_candidate(record: VideoRecord, clip: int, lo: int, hi: int) -> int:
    """Index among candidates lo .. hi of the one caption truly describing `clip`; -1 when unknown or not one."""
    aligned = -1
    if record.aligned_to is not None:
        matches = [c for c, j in enumerate(range(lo, hi + 1)) if record.aligned_to[j] == clip]
        aligned = matches[0] if len(matches) == 1 else -1
    return aligned
