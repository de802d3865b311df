"""The shared DeCEMBERT encoder: video MLP + `transformers.BertModel` over one single-stream sequence.

Sequence: [video tokens (<= max_video_tokens)][text tokens: dense captions, then ASR captions].
Every downstream task and the pre-training model use this module; nothing else builds an encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel

from decembert_cli.data.batch import TokenType, VideoTextBatch, candidate_layout
from decembert_cli.errors import DecembertError
from decembert_cli.model.attention import ATTENTION_NAME, ConstrainedAttention, attention_entropy

if TYPE_CHECKING:
    from transformers import BertConfig


class VideoEmbedding(nn.Module):
    """2D and 3D features, each L2-normalised on its own, concatenated, then a two-layer MLP (biases
    start at zero, as BERT initialises its layers) and a LayerNorm whose gain starts at the word
    embeddings' scale (`match_scale`): a new video token enters the encoder as a word token does,
    its content most of its embedding.

    Measured without them (PyTorch's default init, no LayerNorm) on MiniLM-L6: unit-norm inputs leave
    a fresh MLP's output mostly its constant bias (row norm 0.57), the part that depends on the
    video ~0.17, against position and type embeddings of 0.45 and 0.40, so the video barely reached
    the encoder until the MLP had grown. (The released code LayerNorms the 4096-d input instead.)
    """

    def __init__(self, dim_2d: int, dim_3d: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim_2d + dim_3d, hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
        )
        self.norm = nn.LayerNorm(hidden_size)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)

    def match_scale(self, word_embeddings: nn.Embedding) -> None:
        """Start the gain at the word embeddings' standard deviation: a video token enters the encoder
        at the scale of a word token (called on a new model, after its text weights are loaded)."""
        with torch.no_grad():
            self.norm.weight.fill_(float(word_embeddings.weight.float().std()))

    def forward(self, video_2d: torch.Tensor, video_3d: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([F.normalize(video_2d, dim=-1), F.normalize(video_3d, dim=-1)], dim=-1)  # (B, V, D2+D3)
        return self.norm(self.mlp(feats))  # (B, V, H)


# `model.attention: auto`: the faster attention path per device type, from measurements (training step,
# MLM + VTM + constrained loss; benchmarks/encoder_step.py):
# - cuda: fused 1.06x eager at batch 64 / 211 tokens and 1.54x at batch 128 / 311 tokens, 0.71x / 0.59x the
#   memory (H200, bf16, BERT-base; benchmarks/results/encoder_step_h200_base_bf16_b64_k1.json, _b128_k2.json);
# - cpu: fused 1.19x eager with MiniLM-L6 and 1.01x with BERT-base, batch 8, 212 tokens, 0.86x the memory
#   (2 cores, fp32; benchmarks/results/attention_auto_cpu2.json, attention_auto_base_cpu2.json).
AUTO_ATTENTION = {"cuda": "fused", "cpu": "fused"}


@dataclass
class EncoderOutput:
    """What the shared encoder returns, and what a task head's `forward` gets first: the last hidden states
    of the whole sequence (`[video][text]`, video first), their mask, the mean-pooled vector, and where the
    text starts (`text` is the text block alone). The other fields are filled only when asked for:
    pre-training's constrained attention over the candidate captions (`candidate_u` and its entropies),
    and per-layer attention maps (`attentions`, for `decembert visualize`)."""

    sequence: torch.Tensor  # (B, V+Lt, H) last hidden states, video block first
    mask: torch.Tensor  # (B, V+Lt) bool: real tokens
    pooled: torch.Tensor  # (B, H) mean over real tokens
    num_video: int  # V: where the text block starts
    # (B, layers, heads, n) attention distribution u over candidates (video -> text)
    candidate_u: torch.Tensor | None = None
    # (B,) the constrained loss per sample: entropy of u, mean over layers and heads
    attention_entropy: torch.Tensor | None = None
    # (B,) entropy of the video -> text u alone (= attention_entropy unless both directions)
    u_entropy: torch.Tensor | None = None
    candidate_valid: torch.Tensor | None = None  # (B, n) bool: candidate j exists
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, L, L) maps (eager path)
    logits: list[torch.Tensor] | None = None  # per layer (B, heads, L, L) raw logits (eager + keep_logits)

    @property
    def text(self) -> torch.Tensor:
        return self.sequence[:, self.num_video :]  # (B, Lt, H)


def separate_candidates(mask: torch.Tensor, caption_id: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool, True = may attend: every real token, except that a candidate caption's tokens
    and its [SEP] do not attend to another candidate's. Candidates share positions
    (data.batch.text_positions), so this is what keeps each caption's words together; video, dense
    captions and [CLS] see every candidate, and every candidate sees them.

    mask: (B, L) real tokens, video block first; caption_id: (B, Lt) candidate of each text token, -1 if none.
    """
    b, lt = caption_id.shape
    v = mask.shape[1] - lt
    previous = torch.cat([caption_id.new_full((b, 1), -1), caption_id[:, :-1]], dim=1)
    # a candidate's [SEP] follows its last token
    group = torch.where((caption_id < 0) & (previous >= 0), previous, caption_id)
    group = torch.cat([group.new_full((b, v), -1), group], dim=1)  # (B, L)
    other = (group[:, :, None] >= 0) & (group[:, None, :] >= 0) & (group[:, :, None] != group[:, None, :])  # (B, L, L)
    return (mask[:, None, :] & ~other)[:, None]


def _attention_masks(batch: VideoTextBatch, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(real tokens (B, L), the mask the attention uses (B, 1, 1|L, L)): `attention_mask` if given, else
    the padding mask, and candidates that share positions kept apart."""
    mask = torch.cat([batch.video_mask, batch.text_mask], dim=1)  # (B, L)
    if batch.text_pos is not None:  # candidates that share positions must not see each other
        apart = separate_candidates(mask, batch.caption_id)
        attention_mask = apart if attention_mask is None else attention_mask & apart
    mask4d = attention_mask if attention_mask is not None else mask[:, None, None, :]  # (B, 1, 1|L, L)
    return mask, mask4d


def _attention_context(
    batch: VideoTextBatch, eager: bool, constrained: bool, keep_logits: bool, scores: str, direction: str
) -> ConstrainedAttention:
    """What the attention layers record: full maps (eager), the scores over the candidate captions
    (constrained), the raw logits (keep_logits)."""
    v = batch.video_mask.shape[1]
    if batch.cand_index is not None and batch.cand_mask is not None:
        cand_index, cand_mask = batch.cand_index, batch.cand_mask  # from collate: no host synchronisation
    else:
        cand_index, cand_mask = candidate_layout(batch.caption_id, offset=v)
    return ConstrainedAttention(
        num_video=v,
        video_mask=batch.video_mask,
        cand_index=cand_index,
        cand_mask=cand_mask,
        eager=eager,
        compute_loss=constrained,
        keep_logits=keep_logits,
        probs=scores == "probs",
        both=direction == "both",
    )


def _add_constrained_loss(result: EncoderOutput, ctx: ConstrainedAttention) -> None:
    """Fill in u over the candidates, its entropy (the constrained loss) and which candidates exist."""
    z = torch.stack(ctx.scores, dim=1)  # (B, layers, heads, n)
    u, entropy = attention_entropy(z)
    result.candidate_u = u
    result.u_entropy = entropy.mean(dim=(1, 2))  # (B,)
    result.attention_entropy = result.u_entropy
    if ctx.scores_t2v:
        _, entropy_t2v = attention_entropy(torch.stack(ctx.scores_t2v, dim=1))
        result.attention_entropy = 0.5 * result.u_entropy + 0.5 * entropy_t2v.mean(dim=(1, 2))
    result.candidate_valid = ctx.cand_mask.any(-1)


class DecembertEncoder(nn.Module):
    def __init__(
        self,
        bert_config: BertConfig,
        *,
        dim_2d: int,
        dim_3d: int,
        max_video_tokens: int,
        eager: bool | None,
        video_positions: str = "shared",
    ) -> None:
        super().__init__()
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.bert.set_attn_implementation(ATTENTION_NAME)
        self.video = VideoEmbedding(dim_2d, dim_3d, bert_config.hidden_size, bert_config.hidden_dropout_prob)
        if max_video_tokens > bert_config.max_position_embeddings:
            raise DecembertError(
                f"model.max_video_tokens={max_video_tokens} exceeds the encoder's "
                f"{bert_config.max_position_embeddings} positions"
            )
        self.max_video_tokens = max_video_tokens
        # model.video_positions = separate: the video tokens' own position table (BERT's initialisation)
        self.video_positions: nn.Embedding | None = None
        if video_positions == "separate":
            self.video_positions = nn.Embedding(max_video_tokens, bert_config.hidden_size)
            nn.init.normal_(self.video_positions.weight, std=bert_config.initializer_range)
        elif video_positions != "shared":
            raise DecembertError(f"model.video_positions = {video_positions!r}: use shared or separate")
        self.eager = eager  # the reference path (full attention matrices); None: chosen by the device (auto)

    def uses_eager(self, device: torch.device) -> bool:
        """Whether a forward on `device` takes the eager path: as configured, or (`model.attention: auto`)
        the path AUTO_ATTENTION gives for the device type."""
        return self.eager if self.eager is not None else AUTO_ATTENTION.get(device.type, "fused") == "eager"

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(
        self,
        batch: VideoTextBatch,
        *,
        constrained: bool = False,
        output_attentions: bool = False,
        keep_logits: bool = False,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        scores: str = "logits",
        direction: str = "v2t",
    ) -> EncoderOutput:
        """Encode a batch.

        constrained: also compute the attention distribution over the candidate ASR captions (u)
        and its entropy; scores ("logits" | "probs") and direction ("v2t" | "both") choose the
        loss's form (model/attention.py). output_attentions / keep_logits force the eager path and return maps.
        attention_mask: optional (B, 1, L, L) bool mask (True = may attend) replacing the padding mask,
        e.g. the seq2seq mask of captioning; padding is still excluded from pooling.
        cache: a transformers `DynamicCache` that keeps every layer's keys and values (generation).
        """
        v = batch.video_mask.shape[1]
        if v > self.max_video_tokens:
            raise DecembertError(
                f"{v} video tokens in a batch; the encoder takes at most {self.max_video_tokens} (collate down-samples)"
            )
        inputs, types, positions = self._embed(batch)
        mask, mask4d = _attention_masks(batch, attention_mask)
        eager = self.uses_eager(batch.text_ids.device) or output_attentions or keep_logits
        ctx = None
        if constrained or eager:
            ctx = _attention_context(batch, eager, constrained, keep_logits, scores, direction)
        out = self.bert(
            inputs_embeds=inputs,
            token_type_ids=types,
            position_ids=positions,
            attention_mask=mask4d,
            output_attentions=output_attentions,
            decembert_ctx=ctx,
            cache=cache,
        )
        seq = out.last_hidden_state  # (B, L, H)
        weights = mask.to(seq.dtype)[..., None]
        pooled = (seq * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)
        result = EncoderOutput(sequence=seq, mask=mask, pooled=pooled, num_video=v, attentions=out.attentions)
        if ctx is not None and constrained and ctx.scores:
            _add_constrained_loss(result, ctx)
        if ctx is not None and keep_logits:
            result.logits = ctx.logits
        return result

    def _embed(self, batch: VideoTextBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The input embeddings (B, L, H) of video then text, their token types (B, L) and positions
        ((1, L), or (B, L) when candidate captions share positions)."""
        b, v = batch.video_mask.shape
        lt = batch.text_ids.shape[1]
        device = batch.text_ids.device
        video = self.video(batch.video_2d, batch.video_3d)  # (B, V, H)
        video_pos = torch.arange(v, device=device)
        if self.video_positions is not None:  # BertEmbeddings adds its table to every token: take it away here
            bert_table = self.bert.embeddings.position_embeddings
            video = video + (self.video_positions(video_pos) - bert_table(video_pos))[None]
        text = self.word_embeddings(batch.text_ids)  # (B, Lt, H)
        inputs = torch.cat([video.to(text.dtype), text], dim=1)  # (B, L, H)
        video_types = torch.full((b, v), int(TokenType.VIDEO), device=device, dtype=torch.long)
        types = torch.cat([video_types, batch.text_type], dim=1)
        if batch.text_pos is None:
            positions = torch.cat([video_pos, torch.arange(lt, device=device)])[None]  # (1, L)
        else:  # candidate captions share positions (data.batch.text_positions)
            positions = torch.cat([video_pos.expand(b, v), batch.text_pos], dim=1)  # (B, L)
        return inputs, types, positions

    def extend(
        self, token_ids: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Encode new text tokens after what `cache` holds (incremental decoding).

        token_ids, positions: (B, N) ids and text positions of the new tokens (ASR token type);
        attention_mask: (B, 1, N, cached + N) bool over the cached keys and the new ones;
        returns their last hidden states (B, N, H), and `cache` grows by N.
        """
        embeds = self.word_embeddings(token_ids)
        types = torch.full_like(token_ids, int(TokenType.ASR))
        out = self.bert(
            inputs_embeds=embeds,
            token_type_ids=types,
            position_ids=positions,
            attention_mask=attention_mask,
            cache=cache,
        )
        return out.last_hidden_state
