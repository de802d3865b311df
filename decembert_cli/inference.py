"""The Python API for using a model: one video's features and some text in, outputs out.

    from decembert_cli.api import load_pretrained
    from decembert_cli.inference import answer, attention_to_captions, encode, retrieval_score

`video_2d` and `video_3d` are one video's (or clip's) feature arrays on the 1 s grid, (T, D2) and
(T, D3), NumPy or torch, as `decembert extract-features` writes them. Texts are raw strings,
tokenised with the model's own tokenizer; dense captions, when given, come first in the sequence, as
in training. A sample is built as the model was trained on it: several texts are candidate
captions sharing their positions (pre-training's layout), one text is the question or caption of
a task. `decembert visualize attention` draws its pictures with `attention_to_captions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from decembert_cli.data.batch import EncoderSample, TextSegment, TokenType, VideoTextBatch, collate_with
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.errors import DecembertError
from decembert_cli.model.encoder import EncoderOutput


@dataclass
class Pretrained:
    """A loaded model: `model` is the pre-training model (kind "pretrain") or the task model
    (encoder + head, kind "finetune", with its `task`); `encoder` is the shared encoder in both."""

    model: nn.Module
    encoder: nn.Module
    tokenizer: Any
    config: Any  # the resolved Config (pre-training) or the task's config
    kind: str
    task: Any = None
    source: str = ""


def _settings(model: Pretrained) -> Any:
    """The settings that hold the text budgets: `data.*` (pre-training) or `task.*`."""
    return model.config.data if model.kind == "pretrain" else model.config.task


def sample(
    model: Pretrained, video_2d: Any, video_3d: Any, texts: str | Sequence[str], dense: Sequence[str] = ()
) -> EncoderSample:
    """The encoder sample of (video, texts): [dense captions][text or candidate captions]."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise DecembertError("give at least one text")
    settings = _settings(model)
    budgets = ("max_caption_tokens", "max_text_tokens", "max_question_tokens")  # pre-training, retrieval, QA
    max_text = int(next((getattr(settings, k) for k in budgets if hasattr(settings, k)), 40))
    v2, v3 = (torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in (video_2d, video_3d))
    if v2.ndim != 2 or v3.ndim != 2 or len(v2) != len(v3) or len(v2) == 0:
        raise DecembertError(
            f"video features must be (T, D) arrays with the same T > 0; got {tuple(v2.shape)}, {tuple(v3.shape)}"
        )
    dims = (model.config.model.feature_dim_2d, model.config.model.feature_dim_3d)
    if (v2.shape[1], v3.shape[1]) != dims:
        raise DecembertError(
            f"the model reads {dims[0]}-d 2D and {dims[1]}-d 3D features, got {v2.shape[1]} and {v3.shape[1]}"
        )
    dense_ids = tokenize_captions(model.tokenizer, list(dense), settings.dense_caption_tokens)
    text_ids = tokenize_captions(model.tokenizer, texts, max_text)
    segments = [TextSegment(ids, TokenType.DENSE) for ids in dense_ids]
    if len(texts) == 1:
        segments.append(TextSegment(text_ids[0], TokenType.ASR))
    else:
        segments += [TextSegment(ids, TokenType.ASR, candidate=c) for c, ids in enumerate(text_ids)]
    return EncoderSample(v2, v3, segments)


def _batch(model: Pretrained, samples: list[EncoderSample]) -> VideoTextBatch:
    device = next(model.encoder.parameters()).device
    return collate_with(model.tokenizer, samples, model.config.model.max_video_tokens).to(device)


@torch.no_grad()
def encode(
    model: Pretrained, video_2d: Any, video_3d: Any, texts: str | Sequence[str], dense: Sequence[str] = ()
) -> EncoderOutput:
    """The encoder's output for one (video, texts) pair: `sequence` (1, V + L, H) with the video block
    first, `pooled` (1, H), and for several texts the attention distribution u over them (`candidate_u`)."""
    batch = _batch(model, [sample(model, video_2d, video_3d, texts, dense)])
    return model.encoder(batch, constrained=batch.caption_id is not None and int(batch.caption_id.max()) > 0)


def attention_to_captions(
    model: Pretrained, video_2d: Any, video_3d: Any, captions: Sequence[str], dense: Sequence[str] = ()
) -> np.ndarray:
    """Figure 4: (layers, heads, captions), the attention mass the video tokens put on each candidate caption."""
    one = sample(model, video_2d, video_3d, list(captions), dense)
    batch, attentions = encode_attentions(model.encoder, model.tokenizer, model.config.model.max_video_tokens, one)
    return candidate_mass(attentions, batch.video_mask, batch.caption_id, len(captions))


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


@torch.no_grad()
def encode_attentions(
    encoder: torch.nn.Module, tokenizer: Any, max_video_tokens: int, one: EncoderSample
) -> tuple[VideoTextBatch, tuple[torch.Tensor, ...]]:
    """(batch on the CPU, every layer's attention maps on the CPU) of one sample, the encoder in eval mode."""
    batch = collate_with(tokenizer, [one], max_video_tokens)
    device = next(encoder.parameters()).device
    training = encoder.training
    encoder.eval()
    try:
        out = encoder(batch.to(device), output_attentions=True)
    finally:
        encoder.train(training)
    return batch, tuple(a.float().cpu() for a in out.attentions)


@torch.no_grad()
def task_outputs(model: Pretrained, video_2d: Any, video_3d: Any, text: str, dense: Sequence[str] = ()) -> dict:
    """The task head's values (`HeadOutput.values`) for one (video, text) pair of a fine-tuned model."""
    if model.kind != "finetune":
        raise DecembertError("this needs a fine-tuned model (decembert finetune TASK), not a pre-training one")
    return dict(model.model(_batch(model, [sample(model, video_2d, video_3d, text, dense)])).head.values)


def answer(model: Pretrained, video_2d: Any, video_3d: Any, question: str, dense: Sequence[str] = ()) -> str:
    """The answer a fine-tuned msrvtt-qa model gives (one of its answer vocabulary)."""
    vocabulary = (model.task.state() or {}).get("answers") if model.task is not None else None
    if not vocabulary:
        raise DecembertError("this needs a model fine-tuned for question answering (decembert finetune msrvtt-qa)")
    logits = task_outputs(model, video_2d, video_3d, question, dense)["logits"]
    return str(vocabulary[int(logits[0].argmax())])


def retrieval_score(model: Pretrained, video_2d: Any, video_3d: Any, text: str, dense: Sequence[str] = ()) -> float:
    """How well `text` matches the video (the matching logit of a fine-tuned retrieval model; higher: better)."""
    outputs = task_outputs(model, video_2d, video_3d, text, dense)
    if "score" not in outputs:
        raise DecembertError("this needs a model fine-tuned for retrieval (decembert finetune msrvtt-retrieval)")
    return float(outputs["score"].reshape(-1)[0])
