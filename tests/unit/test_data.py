"""Collation into the single-stream layout, and MLM masking rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decembert_cli.data.batch import IGNORE_INDEX, EncoderSample, TextSegment, TokenType, collate, text_positions
from decembert_cli.data.masking import mask_tokens


def test_collate_layout() -> None:
    a = EncoderSample(
        torch.ones(3, 4),
        torch.ones(3, 4),
        [
            TextSegment([10, 11], TokenType.DENSE, labels=[IGNORE_INDEX, 11]),
            TextSegment([20], TokenType.ASR, candidate=0),
            TextSegment([21, 22, 23], TokenType.ASR, candidate=1),
        ],
        vtm_label=1,
    )
    b = EncoderSample(torch.ones(5, 4), torch.ones(5, 4), [TextSegment([30], TokenType.ASR, candidate=0)], vtm_label=0)
    batch = collate([a, b], cls_id=101, sep_id=102, pad_id=0)
    assert batch.text_ids[0].tolist() == [101, 10, 11, 102, 20, 102, 21, 22, 23, 102]
    assert batch.text_ids[1].tolist() == [101, 30, 102] + [0] * 7
    assert batch.text_type[0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert batch.caption_id[0].tolist() == [-1, -1, -1, -1, 0, -1, 1, 1, 1, -1]
    assert batch.mlm_labels[0].tolist()[:4] == [IGNORE_INDEX, IGNORE_INDEX, 11, IGNORE_INDEX]
    assert batch.video_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.text_mask.sum(1).tolist() == [10, 3]
    assert batch.vtm_labels.tolist() == [1, 0]


def test_collate_rejects_inconsistent_samples() -> None:
    good = EncoderSample(torch.ones(2, 4), torch.ones(2, 4), [TextSegment([5], TokenType.ASR)], vtm_label=1)
    with pytest.raises(ValueError, match="disagree in length"):
        collate([EncoderSample(torch.ones(2, 4), torch.ones(3, 4))], cls_id=2, sep_id=1)
    with pytest.raises(ValueError, match="every sample"):
        collate(
            [good, EncoderSample(torch.ones(2, 4), torch.ones(2, 4), [TextSegment([5], TokenType.ASR)])],
            cls_id=2,
            sep_id=1,
        )


def test_paper_masking_replaces_every_selected_token_with_mask() -> None:
    ids = list(range(1000, 1100)) * 400  # 40,000 tokens
    inputs, labels = mask_tokens(ids, 0.2, np.random.default_rng(0), mask_id=103, vocab_size=30522, replace="mask")
    inputs_a, labels_a, ids_a = np.array(inputs), np.array(labels), np.array(ids)
    selected = labels_a != IGNORE_INDEX
    assert abs(selected.mean() - 0.20) < 0.01
    assert (inputs_a[selected] == 103).all() and (inputs_a[~selected] == ids_a[~selected]).all()
    assert (labels_a[selected] == ids_a[selected]).all()
    with pytest.raises(ValueError, match="mask or bert"):  # a value outside the Literal, on purpose
        mask_tokens(ids[:5], 0.2, np.random.default_rng(0), mask_id=103, vocab_size=30522, replace="other")  # type: ignore[arg-type]


def test_bert_masking_rate_and_replacement_split() -> None:
    rng = np.random.default_rng(0)
    ids = list(range(1000, 1100)) * 400  # 40,000 tokens
    inputs, labels = mask_tokens(ids, 0.2, rng, mask_id=103, vocab_size=30522, replace="bert")
    inputs_a, labels_a, ids_a = np.array(inputs), np.array(labels), np.array(ids)
    selected = labels_a != IGNORE_INDEX
    assert abs(selected.mean() - 0.20) < 0.01
    assert (labels_a[selected] == ids_a[selected]).all()
    masked = (inputs_a == 103) & selected
    kept = (inputs_a == ids_a) & selected
    assert abs(masked.sum() / selected.sum() - 0.8) < 0.02
    assert abs(kept.sum() / selected.sum() - 0.1) < 0.02  # (random replacements rarely hit the same id)
    assert (inputs_a[~selected] == ids_a[~selected]).all()


def test_text_positions_share_one_range_per_run_of_candidates() -> None:
    dense = TextSegment([5, 6], TokenType.DENSE)
    cand = [TextSegment([7] * n, TokenType.ASR, candidate=c) for c, n in enumerate((3, 1, 2))]
    # [CLS] | dense(2)+[SEP] | candidates of 3, 1, 2 tokens (+[SEP]) from one start | dense after the run
    got = text_positions([dense, *cand, dense])
    assert got == [0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 4, 5, 6, 8, 9, 10]  # text after the run follows its longest member
    assert text_positions([dense, dense]) == list(range(7))  # no candidates: sequential
    # two runs separated by a non-candidate: each run has its own start
    two = text_positions([cand[0], dense, cand[1], cand[2]])
    assert two == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 9, 10]
