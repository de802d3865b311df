"""Caption generation on the shared encoder: the seq2seq mask, greedy decoding and beam search.

The sequence is [video][dense captions (the context)][caption]. Video and context tokens attend to
each other in both directions and never to the caption; a caption token attends to the video, the
context and the caption tokens before it (a 4D mask, as the paper following Vaswani et al.). The
caption is trained by next-token prediction: the hidden state of each position predicts the token
after it, the context's last token ([SEP], or [CLS] without dense captions) the first caption word,
and the caption's closing [SEP] is the end of the caption.

Because context tokens never attend to the caption and a caption token never to later ones, every
layer's keys and values of what is already encoded stay the same while decoding: with
`use_cache` the context is encoded once and each step encodes only the new token against the
cached keys and values (a transformers `DynamicCache`), which gives the same result as encoding
the whole sequence again at every step (`use_cache=False`, the reference), up to float rounding.

Beam search is batched across videos (B x beam rows) and follows transformers' rules: a hypothesis
ends with [SEP] when that is among the beam_size best candidates of the step; its score is its
summed log-probability divided by length ** length_penalty (length counts the [SEP]); a video is
done when it has beam_size finished hypotheses and the k-th best of them beats the best open one
scored at the current length; at max_length the open hypotheses end where they are, without [SEP],
and compete with the finished ones. With beam 1 this is greedy decoding (tested against `greedy`).
`no_repeat_ngram = n` forbids any n-gram twice in a hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from decembert_cli.data.batch import VideoTextBatch


@dataclass(frozen=True)
class Decoding:
    beam_size: int = 5  # 1: greedy
    max_length: int = 20  # tokens generated at most ([SEP] included); a caption not ended by then is cut there
    length_penalty: float = 1.0  # alpha: a finished hypothesis scores sum log p / length ** alpha
    no_repeat_ngram: int = 0  # n > 0: no n-gram twice in a caption
    use_cache: bool = True  # encode the context once and each new token against cached keys/values


def seq2seq_mask(video_mask: torch.Tensor, text_mask: torch.Tensor, caption_start: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool, True = may attend: bidirectional over video + context, causal over the caption.

    video_mask (B, V), text_mask (B, Lt); caption_start (B,): text position of each caption's first token.
    Padding is never attended to; padded rows attend to the context (their output is unused).
    """
    b, lt = text_mask.shape
    v = video_mask.shape[1]
    text_pos = torch.arange(lt, device=text_mask.device)[None]  # (1, Lt)
    caption_tokens = text_mask & (text_pos >= caption_start[:, None])  # (B, Lt)
    is_caption = torch.cat([torch.zeros_like(video_mask), caption_tokens], dim=1)  # (B, L)
    real = torch.cat([video_mask, text_mask], dim=1)  # (B, L)
    is_context = real & ~is_caption
    order = torch.arange(v + lt, device=text_mask.device)
    earlier = order[None, :] <= order[:, None]  # (L, L): key j not after query i
    caption_rows = is_caption[:, :, None] & (is_context[:, None, :] | (is_caption[:, None, :] & earlier[None]))
    other_rows = ~is_caption[:, :, None] & is_context[:, None, :]
    return (caption_rows | other_rows)[:, None]  # (B, 1, L, L)


def _context(encoder: Any, batch: VideoTextBatch, cache: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode the context; (hidden state of each sample's last context token (B, H), context key mask
    (B, Lc), context text lengths (B,))."""
    if batch.text_pos is not None:  # the caption continues the context's positions (see `extend`)
        raise ValueError("a caption context holds no candidate captions: its text positions must be sequential")
    out = encoder(batch, cache=cache)
    lengths = batch.text_mask.sum(1)  # (B,)
    last = batch.video_mask.shape[1] + lengths - 1
    hidden = out.sequence[torch.arange(len(lengths), device=last.device), last]  # (B, H)
    return hidden, torch.cat([batch.video_mask, batch.text_mask], dim=1), lengths


def _full_step(encoder: Any, batch: VideoTextBatch, lengths: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """The reference: encode context + all generated tokens again; (rows, H) hidden state of each row's last token."""
    rows, t = generated.shape
    pad = torch.zeros(rows, t, dtype=batch.text_ids.dtype, device=generated.device)
    text_ids = torch.cat([batch.text_ids, pad], dim=1)
    text_ids = text_ids.scatter(1, lengths[:, None] + torch.arange(t, device=generated.device)[None], generated)
    text_mask = torch.arange(text_ids.shape[1], device=generated.device)[None] < (lengths + t)[:, None]
    text_type = torch.cat([batch.text_type, torch.zeros_like(pad)], dim=1).masked_fill(~text_mask, 0)
    caption_id = torch.full_like(text_ids, -1)
    full = batch.changed(
        text_ids=text_ids,
        text_mask=text_mask,
        text_type=text_type,
        caption_id=caption_id,
        mlm_labels=None,
        vtm_labels=None,
    )
    mask = seq2seq_mask(full.video_mask, text_mask, lengths)
    out = encoder(full, attention_mask=mask)
    last = full.video_mask.shape[1] + lengths + t - 1
    return out.sequence[torch.arange(rows, device=last.device), last]


def _repeat(batch: VideoTextBatch, k: int) -> VideoTextBatch:
    """Each sample k times in a row (beams)."""
    changes = {}
    for name in ("video_2d", "video_3d", "video_mask", "text_ids", "text_type", "text_mask", "caption_id"):
        changes[name] = getattr(batch, name).repeat_interleave(k, dim=0)
    return batch.changed(mlm_labels=None, vtm_labels=None, own_candidate=None, aligned=None, extras={}, **changes)


def _log_probs(lm_head: Any, hidden: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    logits = lm_head(hidden).float()  # (rows, vocab)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return F.log_softmax(logits, dim=-1)


def _ban_repeats(logp: torch.Tensor, history: list[list[int]], n: int) -> torch.Tensor:
    """Forbid tokens that would repeat an n-gram already in the row's hypothesis."""
    for row, tokens in enumerate(history):
        if len(tokens) < n - 1:
            continue
        prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]
        if banned:
            logp[row, banned] = float("-inf")
    return logp


@dataclass
class _BeamEncoder:
    """Encodes each step's new tokens of the B x K beam rows and gives the next token's log-probabilities."""

    encoder: Any
    lm_head: Any
    allowed: torch.Tensor | None
    cache: Any  # a DynamicCache (use_cache), else None: the whole sequence is encoded again
    beams: VideoTextBatch | None  # each sample K times (without a cache)
    key_mask: torch.Tensor  # (B*K, Lc) the context's keys
    lengths: torch.Tensor  # (B*K,) context text lengths
    device: torch.device

    @classmethod
    def start(
        cls, encoder: Any, lm_head: Any, batch: VideoTextBatch, decoding: Decoding, allowed: torch.Tensor | None
    ) -> tuple[_BeamEncoder, torch.Tensor]:
        """Encode the context once and repeat it per beam; also the first token's log-probabilities (B*K, vocab)."""
        from transformers import DynamicCache

        k = decoding.beam_size
        cache = DynamicCache(config=encoder.bert.config) if decoding.use_cache else None
        hidden, key_mask, lengths = _context(encoder, batch, cache)
        logp = _log_probs(lm_head, hidden, allowed).repeat_interleave(k, dim=0)  # (B*K, vocab)
        if cache is not None:
            cache.batch_repeat_interleave(k)
        key_mask, lengths = key_mask.repeat_interleave(k, dim=0), lengths.repeat_interleave(k, dim=0)
        beams = _repeat(batch, k) if cache is None else None
        return cls(encoder, lm_head, allowed, cache, beams, key_mask, lengths, batch.text_ids.device), logp

    def next_log_probs(
        self, next_rows: list[int], next_tokens: list[int], history: list[list[int]], t: int
    ) -> torch.Tensor:
        """Row r of the new beams continues row next_rows[r] with next_tokens[r]; the log-probabilities after it."""
        rows = torch.tensor(next_rows, device=self.device)
        tokens = torch.tensor(next_tokens, device=self.device)
        if self.cache is not None:
            self.cache.reorder_cache(rows)
            ones = torch.ones(self.key_mask.shape[0], t + 1, dtype=torch.bool, device=self.device)
            step_mask = torch.cat([self.key_mask, ones], dim=1)[:, None, None]
            hidden = self.encoder.extend(tokens[:, None], (self.lengths + t)[:, None], step_mask, self.cache)[:, 0]
        else:
            assert self.beams is not None  # kept whenever there is no cache
            generated = torch.tensor(history, device=self.device, dtype=torch.long)
            hidden = _full_step(self.encoder, self.beams, self.lengths, generated)
        return _log_probs(self.lm_head, hidden, self.allowed)


@dataclass
class _Beams:
    """Beam search bookkeeping for B videos x K beams; rows i*K .. i*K+K-1 are video i's hypotheses."""

    b: int
    k: int
    vocab: int
    alpha: float  # length penalty
    eos_id: int
    device: torch.device
    scores: torch.Tensor  # (B, K) summed log-probabilities of the open hypotheses; -inf = dead row
    history: list[list[int]]  # per row: its tokens so far
    finished: list[list[tuple[float, list[int]]]]  # per video: (length-penalised score, tokens) ended with [SEP]
    done: list[bool]

    @classmethod
    def start(cls, b: int, k: int, vocab: int, alpha: float, eos_id: int, device: torch.device) -> _Beams:
        """K empty hypotheses per video, only the first of them open."""
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # the k copies start identical: expand the first only
        history: list[list[int]] = [[] for _ in range(b * k)]
        return cls(b, k, vocab, alpha, eos_id, device, scores, history, [[] for _ in range(b)], [False] * b)

    def step(self, logp: torch.Tensor, t: int) -> tuple[list[int], list[int]]:
        """Extend every video's beams by one token (step t); (parent row, token) of each new row."""
        k = self.k
        total = (self.scores.view(-1, 1) + logp).view(self.b, k * self.vocab)
        top_scores, top_index = total.topk(min(2 * k, k * self.vocab), dim=1)
        next_rows, next_tokens, next_scores = [], [], []
        for i in range(self.b):
            chosen = self._choose(i, top_scores[i].tolist(), top_index[i].tolist(), t)
            self._check_done(i, chosen, t)
            for row, token, score in chosen:
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score if not self.done[i] else float("-inf"))
        self.history = [self.history[r] + [tok] for r, tok in zip(next_rows, next_tokens)]
        self.scores = torch.tensor(next_scores, device=self.device).view(self.b, k)
        return next_rows, next_tokens

    def _choose(self, i: int, top_scores: list[float], top_index: list[int], t: int) -> list[tuple[int, int, float]]:
        """Video i's K best continuations (row, token, score) among its 2K best candidates; a [SEP] among
        the K best ends its hypothesis (into `finished`). Padded with dead rows when too few."""
        k = self.k
        chosen = []
        for rank, (score, index) in enumerate(zip(top_scores, top_index)):
            if score == float("-inf"):
                break
            beam, token = divmod(index, self.vocab)
            row = i * k + beam
            if token == self.eos_id:
                if not self.done[i] and rank < k:  # an end among the k best candidates (as transformers)
                    self.finished[i].append((score / (t + 1) ** self.alpha, self.history[row]))
                continue
            chosen.append((row, token, score))
            if len(chosen) == k:
                break
        while len(chosen) < k:  # too few continuations: dead rows
            chosen.append((i * k, self.eos_id, float("-inf")))
        return chosen

    def _check_done(self, i: int, chosen: list[tuple[int, int, float]], t: int) -> None:
        """Video i is done when no hypothesis is open, or (transformers' rule) when the K-th best
        finished one beats the best open one scored at today's length."""
        best_open = max(s for _, _, s in chosen)
        if best_open == float("-inf"):
            self.done[i] = True
        elif len(self.finished[i]) >= self.k:
            kth_best = sorted((f[0] for f in self.finished[i]), reverse=True)[self.k - 1]
            self.done[i] = self.done[i] or kth_best >= best_open / (t + 1) ** self.alpha

    def results(self) -> list[tuple[list[int], float]]:
        """Per video: the best hypothesis' tokens (without [SEP]) and its score."""
        k, alpha = self.k, self.alpha
        results = []
        for i in range(self.b):
            candidates = list(self.finished[i])
            # at max_length the open hypotheses end where they are, without [SEP] (as transformers)
            if not self.done[i]:
                candidates += [
                    (float(self.scores[i, j]) / len(self.history[i * k + j]) ** alpha, self.history[i * k + j])
                    for j in range(k)
                    if self.scores[i, j] > float("-inf")
                ]
            candidates.sort(key=lambda c: -c[0])
            score, tokens = candidates[0] if candidates else (float("-inf"), [])
            results.append((list(tokens), score))
        return results


def generate(
    encoder: Any,
    lm_head: Any,
    batch: VideoTextBatch,
    decoding: Decoding,
    *,
    eos_id: int,
    allowed: torch.Tensor | None = None,
) -> list[tuple[list[int], float]]:
    """Per sample of `batch` (its text = the context only): the best caption's token ids (without
    [SEP]) and its score. `allowed` (vocab,) bool restricts the tokens that may be generated."""
    if decoding.beam_size < 1 or decoding.max_length < 1:
        raise ValueError("beam_size and max_length must be at least 1")
    steps, logp = _BeamEncoder.start(encoder, lm_head, batch, decoding, allowed)
    beams = _Beams.start(
        batch.batch_size, decoding.beam_size, logp.shape[-1], decoding.length_penalty, eos_id, batch.text_ids.device
    )
    for t in range(decoding.max_length):
        if decoding.no_repeat_ngram > 0:
            logp = _ban_repeats(logp, beams.history, decoding.no_repeat_ngram)
        next_rows, next_tokens = beams.step(logp, t)
        if all(beams.done) or t == decoding.max_length - 1:
            break
        logp = steps.next_log_probs(next_rows, next_tokens, beams.history, t)
    return beams.results()


def greedy(
    encoder: Any,
    lm_head: Any,
    batch: VideoTextBatch,
    decoding: Decoding,
    *,
    eos_id: int,
    allowed: torch.Tensor | None = None,
) -> list[tuple[list[int], float]]:
    """The most likely token at each step, until [SEP] or max_length; score as in beam search."""
    from transformers import DynamicCache

    b = batch.batch_size
    device = batch.text_ids.device
    cache = DynamicCache(config=encoder.bert.config) if decoding.use_cache else None
    hidden, key_mask, lengths = _context(encoder, batch, cache)
    tokens: list[list[int]] = [[] for _ in range(b)]
    sums = [0.0] * b
    ended = [False] * b
    alpha = decoding.length_penalty
    for t in range(decoding.max_length):
        logp = _log_probs(lm_head, hidden, allowed)
        if decoding.no_repeat_ngram > 0:
            logp = _ban_repeats(logp, tokens, decoding.no_repeat_ngram)
        best = logp.argmax(-1)
        for i in range(b):
            if ended[i]:
                continue
            sums[i] += float(logp[i, best[i]])
            if int(best[i]) == eos_id:
                ended[i] = True
            else:
                tokens[i].append(int(best[i]))
        if all(ended) or t == decoding.max_length - 1:
            break
        if cache is not None:
            step_mask = torch.cat([key_mask, torch.ones(b, t + 1, dtype=torch.bool, device=device)], dim=1)[
                :, None, None
            ]
            hidden = encoder.extend(best[:, None], (lengths + t)[:, None], step_mask, cache)[:, 0]
        else:
            hidden = _full_step(
                encoder, batch, lengths, torch.tensor([x + [eos_id] * (t + 1 - len(x)) for x in tokens], device=device)
            )
    return [
        (tokens[i], sums[i] / (len(tokens[i]) + int(ended[i])) ** alpha if tokens[i] or ended[i] else float("-inf"))
        for i in range(b)
    ]
