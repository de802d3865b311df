"""The encoder's input: one single-stream sequence per sample, [video][dense captions][ASR captions].

A sample is its video features plus text segments; `collate` pads samples into a `VideoTextBatch`.
The text starts with [CLS] and each text segment is followed by [SEP], as BERT was pre-trained
(its heads use [CLS] at position 0 as an attention sink; without it a pre-trained BERT takes
far longer to learn cross-segment matching). Video tokens and text tokens have their own position
ranges (both start at 0), so a sample's encoding does not depend on how much padding its batch
needs, and text-only input is exactly BERT's.

Candidate captions (the constrained loss's s_{i-k} .. s_{i+k}) are interchangeable: a run of
consecutive candidate segments shares one position range, each starting where the text before it
ends, and text after them continues after the longest one. With equal positions and token types,
nothing but their words tells the candidates apart, so the entropy loss cannot sharpen attention
onto a slot (measured: with time-ordered positions it learned "the first candidate").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any

import torch

IGNORE_INDEX = -100  # label of tokens that are not predicted (PyTorch's cross-entropy default)


class TokenType(IntEnum):
    """Token-type embedding rows. ASR and dense captions reuse BERT's sentence A / B rows."""

    ASR = 0  # ASR captions (the clip's own and its neighbours)
    DENSE = 1  # dense region captions
    VIDEO = 2  # video feature tokens (a row added to BERT's two)


@dataclass
class TextSegment:
    """One caption in the sequence."""

    ids: list[int]  # WordPiece ids, without special tokens
    kind: TokenType  # ASR or DENSE
    candidate: int = -1  # index of this caption among the constrained loss's candidates; -1: not one
    labels: list[int] | None = None  # MLM targets aligned with `ids` (IGNORE_INDEX where not masked)
    original: list[int] | None = None  # `ids` before MLM masking, when masked (VTM on the unmasked text)


@dataclass
class EncoderSample:
    """One item for the encoder: a clip's two feature streams on the 1-per-second grid, its text segments
    in sequence order (each a `TextSegment` of a `TokenType`), and `extras` (a task's targets and ids,
    collated by key). The other fields are pre-training's (VTM label, candidate captions)."""

    video_2d: torch.Tensor  # (T, D2) 2D appearance features, one per second
    video_3d: torch.Tensor  # (T, D3) 3D motion features on the same grid
    segments: list[TextSegment] = field(default_factory=list)  # in sequence order
    vtm_label: int | None = None  # 1: the ASR captions belong to this clip, 0: a negative
    own_candidate: int = -1  # candidate index of the clip's own caption s_i (-1: a negative or unknown)
    aligned: int = -1  # candidate index of the caption truly describing the clip, when known (-1: unknown/none)
    # per candidate slot: its caption's index minus the clip's (time offset)
    candidate_offsets: list[int] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # task data (targets, ids); collated by key


@dataclass
class VideoTextBatch:
    """Collated `EncoderSample`s (`collate_with`): padded video features and masks, the text's WordPiece
    ids, token types and mask, and `extras` (per key a (B,) tensor of numbers, else a list). The optional
    fields are pre-training's targets and layouts; `.to(device)` moves every tensor."""

    video_2d: torch.Tensor  # (B, V, D2) float
    video_3d: torch.Tensor  # (B, V, D3) float
    video_mask: torch.Tensor  # (B, V) bool
    text_ids: torch.Tensor  # (B, Lt) long, [PAD] = 0 where padded
    text_type: torch.Tensor  # (B, Lt) long TokenType
    text_mask: torch.Tensor  # (B, Lt) bool
    caption_id: torch.Tensor  # (B, Lt) long: candidate index of the token's caption, -1 otherwise
    mlm_labels: torch.Tensor | None = None  # (B, Lt) long, IGNORE_INDEX where not predicted
    # (B, Lt) long: text_ids before MLM masking (segments' `original`); None when no segment carries its original
    unmasked_ids: torch.Tensor | None = None
    vtm_labels: torch.Tensor | None = None  # (B,) long, 1 positive / 0 negative
    own_candidate: torch.Tensor | None = None  # (B,) long, candidate index of s_i, -1 when none
    aligned: torch.Tensor | None = None  # (B,) long, candidate index of the truly aligned caption, -1 unknown
    text_pos: torch.Tensor | None = None  # (B, Lt) long position ids of the text; None: 0 .. Lt-1 in every row
    candidate_offset: torch.Tensor | None = None  # (B, n) long time offset of candidate slot j (IGNORE_INDEX: none)
    # Shapes the model would otherwise read from the data (a host synchronisation on a GPU), computed on
    # the CPU by `collate`; None in a batch made another way (the model then computes them).
    cand_index: torch.Tensor | None = None  # (B, n, Lc) sequence position of token t of candidate j (candidate_layout)
    cand_mask: torch.Tensor | None = None  # (B, n, Lc) bool: that token exists
    mlm_index: torch.Tensor | None = None  # (N,) flat (B * Lt, row-major) positions of the MLM targets
    extras: dict[str, Any] = field(default_factory=dict)  # per key: (B,) tensor of numbers, else a list

    @property
    def batch_size(self) -> int:
        return self.text_ids.shape[0]

    def changed(self, **changes: Any) -> VideoTextBatch:
        """A copy with some fields replaced; the precomputed layout is dropped (the model recomputes it)."""
        return replace(self, **{"cand_index": None, "cand_mask": None, "mlm_index": None, **changes})

    def to(self, device: torch.device | str) -> VideoTextBatch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        moved["extras"] = {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()
        }
        return VideoTextBatch(**moved)


def candidate_layout(caption_id: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather layout of the candidate captions.

    caption_id: (B, Lt) long, j >= 0 for a token of candidate caption j, -1 otherwise.
    offset: sequence position of text token 0 (the text block follows the video block).
    Returns cand_index (B, n, Lc) with sequence positions (0 where padded) and cand_mask (B, n, Lc).
    """
    batch, text_len = caption_id.shape
    n = int(caption_id.max().item()) + 1 if caption_id.numel() else 0
    if n <= 0:
        empty = torch.zeros(batch, 0, 0, dtype=torch.long, device=caption_id.device)
        return empty, empty.bool()
    arange_n = torch.arange(n, device=caption_id.device)
    member = caption_id[:, None, :] == arange_n[None, :, None]  # (B, n, Lt)
    lengths = member.sum(-1)  # (B, n)
    lc = int(lengths.max().item())
    pos = torch.arange(text_len, device=caption_id.device).expand_as(member)
    # members first, in order; non-members pushed behind them
    sort_key = torch.where(member, pos, pos + text_len)
    order = sort_key.argsort(dim=-1)[..., :lc]  # (B, n, Lc) text positions
    cand_mask = torch.arange(lc, device=caption_id.device)[None, None, :] < lengths[..., None]
    cand_index = torch.where(cand_mask, order + offset, torch.zeros_like(order))
    return cand_index, cand_mask


def uniform_indices(length: int, max_tokens: int) -> torch.Tensor:
    """Indices that uniformly down-sample `length` steps to at most `max_tokens` (first and last kept)."""
    if length <= max_tokens:
        return torch.arange(length)
    return torch.linspace(0, length - 1, max_tokens).round().long()


def collate(
    samples: Sequence[EncoderSample],
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    max_video_tokens: int = 100,
) -> VideoTextBatch:
    """Pad samples into one batch; video longer than `max_video_tokens` is uniformly down-sampled."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    videos_2d, videos_3d, texts = [], [], []
    for s in samples:
        if s.video_2d.shape[0] != s.video_3d.shape[0]:
            raise ValueError(f"2D and 3D features disagree in length: {s.video_2d.shape[0]} vs {s.video_3d.shape[0]}")
        keep = uniform_indices(s.video_2d.shape[0], max_video_tokens)
        videos_2d.append(s.video_2d[keep])
        videos_3d.append(s.video_3d[keep])
        texts.append(_text_row(s.segments, cls_id, sep_id))
    video_2d, video_3d, video_mask = _pad_video(videos_2d, videos_3d)
    text_ids, text_type, text_mask, caption_id, mlm_labels, text_pos, unmasked_ids = _pad_text(texts, pad_id)
    vtm = _collate_vtm(samples)
    targets = mlm_labels != IGNORE_INDEX
    has_mlm = bool(targets.any())
    lt = text_ids.shape[1]  # text_pos is left out when every row is 0 .. lt-1
    cand_index, cand_mask = candidate_layout(caption_id, offset=video_mask.shape[1])
    return VideoTextBatch(
        video_2d=video_2d,
        video_3d=video_3d,
        video_mask=video_mask,
        text_ids=text_ids,
        text_type=text_type,
        text_mask=text_mask,
        caption_id=caption_id,
        mlm_labels=mlm_labels if has_mlm else None,
        unmasked_ids=unmasked_ids if any(seg.original is not None for s in samples for seg in s.segments) else None,
        vtm_labels=vtm,
        own_candidate=torch.tensor([s.own_candidate for s in samples], dtype=torch.long),
        aligned=torch.tensor([s.aligned for s in samples], dtype=torch.long),
        text_pos=None if bool((text_pos == torch.arange(lt)).all()) else text_pos,
        candidate_offset=_collate_offsets(samples),
        cand_index=cand_index,
        cand_mask=cand_mask,
        mlm_index=targets.flatten().nonzero().squeeze(1) if has_mlm else None,
        extras=_collate_extras(samples),
    )


# ids, types, caption ids, labels, positions, unmasked ids
_TextRow = tuple[list[int], list[int], list[int], list[int], list[int], list[int]]


def _text_row(segments: Sequence[TextSegment], cls_id: int, sep_id: int) -> _TextRow:
    """One sample's unpadded text, [CLS] then each segment with its [SEP]: ids, types, captions, labels, positions
    and the ids before masking."""
    ids: list[int] = [cls_id]
    unmasked: list[int] = [cls_id]
    types: list[int] = [int(TokenType.ASR)]
    caps: list[int] = [-1]
    labels: list[int] = [IGNORE_INDEX]
    for seg in segments:
        seg_labels = seg.labels if seg.labels is not None else [IGNORE_INDEX] * len(seg.ids)
        if len(seg_labels) != len(seg.ids) or (seg.original is not None and len(seg.original) != len(seg.ids)):
            raise ValueError("a segment's labels and original ids must align with its ids")
        ids += [*seg.ids, sep_id]
        unmasked += [*(seg.ids if seg.original is None else seg.original), sep_id]
        types += [int(seg.kind)] * (len(seg.ids) + 1)
        caps += [seg.candidate] * len(seg.ids) + [-1]
        labels += [*seg_labels, IGNORE_INDEX]
    return ids, types, caps, labels, text_positions(segments), unmasked


def _pad_video(
    videos_2d: Sequence[torch.Tensor], videos_3d: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, V, D2) and (B, V, D3) float32 zero-padded features and their (B, V) mask."""
    b = len(videos_2d)
    v = max(x.shape[0] for x in videos_2d)
    d2, d3 = videos_2d[0].shape[1], videos_3d[0].shape[1]
    video_2d = torch.zeros(b, v, d2, dtype=torch.float32)
    video_3d = torch.zeros(b, v, d3, dtype=torch.float32)
    video_mask = torch.zeros(b, v, dtype=torch.bool)
    for i, (x2, x3) in enumerate(zip(videos_2d, videos_3d)):
        t = x2.shape[0]
        video_2d[i, :t] = x2
        video_3d[i, :t] = x3
        video_mask[i, :t] = True
    return video_2d, video_3d, video_mask


def _pad_text(
    texts: Sequence[_TextRow], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, Lt) padded text ids, types, mask, caption ids, MLM labels, positions and unmasked ids."""
    b = len(texts)
    lt = max(len(t[0]) for t in texts)
    text_ids = torch.full((b, lt), pad_id, dtype=torch.long)
    text_type = torch.full((b, lt), int(TokenType.ASR), dtype=torch.long)
    text_mask = torch.zeros(b, lt, dtype=torch.bool)
    caption_id = torch.full((b, lt), -1, dtype=torch.long)
    mlm_labels = torch.full((b, lt), IGNORE_INDEX, dtype=torch.long)
    text_pos = torch.arange(lt, dtype=torch.long).repeat(b, 1)  # padding keeps its index (never attended to)
    unmasked_ids = torch.full((b, lt), pad_id, dtype=torch.long)
    for i, (ids, types, caps, labels, pos, unmasked) in enumerate(texts):
        n = len(ids)
        text_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        text_type[i, :n] = torch.tensor(types, dtype=torch.long)
        text_mask[i, :n] = True
        caption_id[i, :n] = torch.tensor(caps, dtype=torch.long)
        mlm_labels[i, :n] = torch.tensor(labels, dtype=torch.long)
        text_pos[i, :n] = torch.tensor(pos, dtype=torch.long)
        unmasked_ids[i, :n] = torch.tensor(unmasked, dtype=torch.long)
    return text_ids, text_type, text_mask, caption_id, mlm_labels, text_pos, unmasked_ids


def _collate_vtm(samples: Sequence[EncoderSample]) -> torch.Tensor | None:
    """(B,) VTM labels when every sample has one, None when none has."""
    has_vtm = [s.vtm_label is not None for s in samples]
    if any(has_vtm) and not all(has_vtm):
        raise ValueError("either every sample of a batch has a VTM label or none has")
    return (
        torch.tensor([int(s.vtm_label) for s in samples if s.vtm_label is not None], dtype=torch.long)
        if all(has_vtm)
        else None
    )


def collate_with(tokenizer: Any, samples: Sequence[EncoderSample], max_video_tokens: int = 100) -> VideoTextBatch:
    """`collate` with the tokenizer's [CLS], [SEP] and [PAD] ids."""
    return collate(
        samples,
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
        max_video_tokens=max_video_tokens,
    )


def text_positions(segments: Sequence[TextSegment]) -> list[int]:
    """Position ids of [CLS] + segments (each with its [SEP]): sequential, except that a run of
    consecutive candidate segments shares one range (each starts where the text before the run
    ends) and the text after the run continues after its longest member."""
    positions = [0]
    cursor = 1  # next free position
    run_start = run_end = -1  # the current run of candidates: its first position and one past its longest member
    for seg in segments:
        width = len(seg.ids) + 1
        if seg.candidate >= 0:
            if run_start < 0:
                run_start, run_end = cursor, cursor
            positions += range(run_start, run_start + width)
            run_end = max(run_end, run_start + width)
            continue
        if run_start >= 0:
            cursor, run_start = run_end, -1
        positions += range(cursor, cursor + width)
        cursor += width
    return positions


def _collate_offsets(samples: Sequence[EncoderSample]) -> torch.Tensor | None:
    if not any(s.candidate_offsets for s in samples):
        return None
    out = torch.full((len(samples), max(len(s.candidate_offsets) for s in samples)), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        out[i, : len(s.candidate_offsets)] = torch.tensor(s.candidate_offsets, dtype=torch.long)
    return out


def _collate_extras(samples: Sequence[EncoderSample]) -> dict[str, Any]:
    keys = set(samples[0].extras)
    if any(set(s.extras) != keys for s in samples):
        raise ValueError("every sample of a batch must carry the same extras")
    out: dict[str, Any] = {}
    for key in sorted(keys):
        values = [s.extras[key] for s in samples]
        if all(isinstance(v, bool) or isinstance(v, int) for v in values):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out
