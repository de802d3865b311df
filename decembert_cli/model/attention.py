"""The DeCEMBERT attention function and the constrained (entropy-minimisation) attention loss.

Registered with transformers' `AttentionInterface` under the name "decembert", so `BertModel` calls
it in every layer. Without a `ConstrainedAttention` context it is plain SDPA. With one it also
computes, per layer and head, the loss of DESIGN.md §1:

    S = Q K^T / sqrt(d) between the clip's video tokens (queries) and candidate caption j's tokens
    z_j = mean over video tokens of (max over caption j's tokens of S)
    u = softmax_j(z_j),  L_e = -sum_j u_j log u_j

Fused mode (the default) runs the attention itself through SDPA and computes only the
(video queries x candidate keys) blocks of the logits that the loss needs: the full L x L attention
matrix is never materialised. Eager mode computes the full logits and softmax (the reference path;
it also returns attention maps and can keep the logits for inspection).

Two variants of the released code (zinengtang/DeCEMBERT), as settings beside the paper's form:
- scores = "probs": S is the post-softmax attention probability instead of the logit (fused mode
  then computes the video rows, or the candidate rows, against every key for the softmax's
  normaliser: V x L, not L x L);
- both = True: also the text-to-video direction, candidate-caption tokens as queries and video
  tokens as keys, reduced the same way (max over the caption's tokens, mean over the video tokens);
  the loss averages the two entropies (0.5 / 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION_NAME = "decembert"


@dataclass
class ConstrainedAttention:
    """Per-forward context handed to every layer's attention call (and filled by it).

    The candidate layout comes with the batch (built on the CPU by `collate`, or by `candidate_layout`
    for a batch made another way); layers append their
    per-(sample, head, candidate) scores z to `scores`.
    """

    num_video: int  # V: the video block occupies sequence positions [0, V)
    video_mask: torch.Tensor  # (B, V) bool: real (not padded) video tokens
    cand_index: torch.Tensor  # (B, n, Lc) long: sequence position of token t of candidate caption j
    cand_mask: torch.Tensor  # (B, n, Lc) bool: that token exists (captions are padded to Lc)
    eager: bool = False  # compute the full attention matrix (reference path)
    compute_loss: bool = True  # False: only run attention (eager maps for visualisation)
    keep_logits: bool = False  # eager only: keep each layer's full (B, h, L, L) logits
    probs: bool = False  # S = post-softmax probabilities (the released code) instead of logits (the paper)
    both: bool = False  # also score the text-to-video direction (the released code)
    scores: list[torch.Tensor] = field(default_factory=list)  # z: one (B, h, n) tensor per layer
    scores_t2v: list[torch.Tensor] = field(default_factory=list)  # both: z of the text-to-video direction, per layer
    logits: list[torch.Tensor] = field(default_factory=list)  # eager + keep_logits: (B, h, L, L) per layer


def candidate_scores(block: torch.Tensor, cand_mask: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """z_j from the logits block.

    block: (B, h, V, n, Lc) raw logits S between video queries and candidate caption keys.
    Returns z: (B, h, n) in at least float32, the mean over real video tokens of the max over the caption's
    real tokens; -inf for candidates that do not exist (padding takes part in neither reduction).
    """
    if block.dtype in (torch.float16, torch.bfloat16):
        block = block.float()  # the loss is computed in fp32 under autocast
    cand_valid = cand_mask.any(-1)  # (B, n)
    masked = block.masked_fill(~cand_mask[:, None, None], float("-inf"))
    z_tok = masked.amax(-1)  # (B, h, V, n): max over the caption's tokens
    z_tok = z_tok.masked_fill(~cand_valid[:, None, None, :], 0.0)  # finite for empty candidates
    vm = video_mask[:, None, :, None].to(block.dtype)  # (B, 1, V, 1)
    z = (z_tok * vm).sum(2) / vm.sum(2).clamp(min=1.0)  # (B, h, n): mean over real video tokens
    return z.masked_fill(~cand_valid[:, None, :], float("-inf"))


def attention_entropy(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u = softmax(z) over candidates and its entropy, for z of shape (..., n) with -inf = absent.

    Returns (u, entropy) with shapes (..., n) and (...); rows without any candidate get u = 0 and
    entropy 0.
    """
    valid = torch.isfinite(z)
    has_any = valid.any(-1, keepdim=True)
    logits = torch.where(has_any, z, torch.zeros_like(z))  # a row of -inf would give NaN
    log_u = F.log_softmax(logits, dim=-1).masked_fill(~valid, 0.0)
    u = log_u.exp().masked_fill(~valid, 0.0)
    entropy = -(u * log_u).sum(-1)
    return u, entropy.masked_fill(~has_any.squeeze(-1), 0.0)


def _gather_tokens(x: torch.Tensor, cand_index: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d) queries or keys -> (B, h, n*Lc, d) those of the candidate tokens."""
    b, h, _, d = x.shape
    flat = cand_index.reshape(b, 1, -1, 1).expand(b, h, cand_index.shape[1] * cand_index.shape[2], d)
    return x.gather(2, flat)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _mask_rows(mask: torch.Tensor | None, rows: torch.Tensor | slice) -> torch.Tensor | None:
    """The additive mask's rows for some queries: a (B, 1, 1, L) padding mask applies to every row;
    a (B, 1, L, L) mask is indexed (rows: a slice, or a (B, R) index of query positions)."""
    if mask is None or mask.shape[-2] == 1:
        return mask
    if isinstance(rows, slice):
        return mask[:, :, rows]
    return mask.gather(2, rows[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[-1]))


def _row_probs(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over all keys of some query rows (B, h, R, L), before dropout."""
    return F.softmax(logits + mask if mask is not None else logits, dim=-1)


def _score_blocks(
    ctx: ConstrainedAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    full: torch.Tensor | None = None,
) -> None:
    """Append this layer's z (and the text-to-video z) to `ctx`.

    query, key: (B, h, L, d); mask: additive, (B, 1, 1|L, L); full: the whole (B, h, L, L) logits
    when the caller has them (eager), else the needed blocks are computed from query and key.
    """
    b, h = query.shape[:2]
    n, lc = ctx.cand_index.shape[1:]
    v = ctx.num_video
    cols = ctx.cand_index.reshape(b, 1, 1, n * lc)

    def rows_vs(
        rows_q: torch.Tensor | None, row_index: torch.Tensor | slice, keys: torch.Tensor | None
    ) -> torch.Tensor:
        """Scores of some query rows against `keys` ((B, h, K, d); None = every key, needed for probs).
        `rows_q` (the rows' queries) is needed only without the full logits."""
        if full is not None:
            if isinstance(row_index, slice):
                block = full[:, :, row_index]
            else:
                block = full.gather(2, row_index[:, None, :, None].expand(b, h, -1, full.shape[-1]))
        else:
            assert rows_q is not None
            block = torch.matmul(rows_q, (key if keys is None else keys).transpose(2, 3)) * scaling
        return block

    # video queries x candidate keys: (B, h, V, n, Lc)
    if ctx.probs:
        rows = _row_probs(rows_vs(query[:, :, :v], slice(0, v), None), _mask_rows(mask, slice(0, v)))  # (B, h, V, L)
        block = rows.gather(-1, cols.expand(b, h, v, n * lc))
    elif full is not None:
        block = full[:, :, :v].gather(-1, cols.expand(b, h, v, n * lc))
    else:
        block = rows_vs(query[:, :, :v], slice(0, v), _gather_tokens(key, ctx.cand_index))
    ctx.scores.append(candidate_scores(block.view(b, h, v, n, lc), ctx.cand_mask, ctx.video_mask))
    if not ctx.both:
        return
    # candidate queries x video keys: (B, h, n*Lc, V) -> (B, h, V, n, Lc), the same reductions
    cand_rows = ctx.cand_index.reshape(b, n * lc)
    q_cand = _gather_tokens(query, ctx.cand_index) if full is None else None
    if ctx.probs:
        t2v = _row_probs(rows_vs(q_cand, cand_rows, None), _mask_rows(mask, cand_rows))[..., :v]
    else:
        t2v = rows_vs(q_cand, cand_rows, key[:, :, :v])
        t2v = t2v[..., :v] if full is not None else t2v
    block_t2v = t2v.view(b, h, n, lc, v).permute(0, 1, 4, 2, 3)
    ctx.scores_t2v.append(candidate_scores(block_t2v, ctx.cand_mask, ctx.video_mask))


def _eager(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    ctx: ConstrainedAttention | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, L, L)
    additive = _additive(attention_mask, logits.dtype)
    if ctx is not None and ctx.compute_loss and ctx.cand_index.numel():
        _score_blocks(ctx, query, key, additive, scaling, full=logits)
    if ctx is not None and ctx.keep_logits:
        ctx.logits.append(logits)
    scores = logits + additive if additive is not None else logits
    probs = F.softmax(scores, dim=-1)
    dropped = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()  # (B, L, h, d)
    return out, probs


def decembert_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    decembert_ctx: ConstrainedAttention | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention for BertSelfAttention: (B, h, L, d) q/k/v -> ((B, L, h, d) output, maps or None)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    ctx = decembert_ctx
    if ctx is not None and ctx.eager:
        return _eager(module, query, key, value, attention_mask, scaling, dropout, ctx)
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=False
    )
    if ctx is not None and ctx.compute_loss and ctx.cand_index.numel():
        additive = _additive(attention_mask, query.dtype) if ctx.probs else None
        _score_blocks(ctx, query, key, additive, scaling)
    return out, None


AttentionInterface.register(ATTENTION_NAME, decembert_attention)
