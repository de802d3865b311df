"""Retrieval metrics against a straightforward sort-based implementation, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from decembert_cli.errors import DecembertError
from decembert_cli.metrics.retrieval import ranks_text_to_video, ranks_video_to_text, retrieval_metrics


def _naive_ranks(scores: np.ndarray, correct: list[set[int]]) -> list[int]:
    """Per query row: sort by score, wrong items first among equals (pessimistic); 1 + first correct position."""
    ranks = []
    for row, good in zip(scores.tolist(), correct):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j in good))
        ranks.append(1 + next(i for i, j in enumerate(order) if j in good))
    return ranks


def _naive_summary(ranks: list[int]) -> dict[str, float]:
    n = len(ranks)
    s = sorted(ranks)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {
        "R@1": 100 * sum(r <= 1 for r in ranks) / n,
        "R@5": 100 * sum(r <= 5 for r in ranks) / n,
        "R@10": 100 * sum(r <= 10 for r in ranks) / n,
        "MedR": median,
        "MeanR": sum(ranks) / n,
    }


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_a_naive_implementation_on_random_matrices_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    videos = int(rng.integers(5, 40))
    per_video = int(rng.integers(1, 4))  # several texts per video, as MSR-VTT's 20 captions
    video_of_text = np.repeat(np.arange(videos), per_video)
    scores = rng.integers(0, 4, size=(len(video_of_text), videos)).astype(float)  # few levels: many ties
    t2v = _naive_ranks(scores, [{int(v)} for v in video_of_text])
    v2t = _naive_ranks(scores.T, [set(np.flatnonzero(video_of_text == v).tolist()) for v in range(videos)])
    assert ranks_text_to_video(scores, video_of_text).tolist() == t2v
    assert ranks_video_to_text(scores, video_of_text).tolist() == v2t
    metrics = retrieval_metrics(scores, video_of_text)
    for prefix, ranks in (("t2v", t2v), ("v2t", v2t)):
        for key, value in _naive_summary(ranks).items():
            assert metrics[f"{prefix}_{key}"] == pytest.approx(value), (prefix, key)


def test_perfect_constant_and_reversed_matrices() -> None:
    n = 50
    perfect = retrieval_metrics(np.eye(n), np.arange(n))
    assert perfect["t2v_R@1"] == 100.0 and perfect["t2v_MedR"] == 1.0 and perfect["v2t_R@1"] == 100.0
    constant = retrieval_metrics(np.zeros((n, n)), np.arange(n))  # ties broken pessimistically: every item last
    assert constant["t2v_R@10"] == 0.0 and constant["t2v_MedR"] == n and constant["v2t_MeanR"] == n
    worst = retrieval_metrics(-np.eye(n), np.arange(n))
    assert worst["t2v_MedR"] == n


def test_bad_matrices_are_refused() -> None:
    with pytest.raises(DecembertError, match="NaN"):
        retrieval_metrics(np.full((2, 2), np.nan), np.arange(2))
    with pytest.raises(DecembertError, match="outside the 2 videos"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 2]))
