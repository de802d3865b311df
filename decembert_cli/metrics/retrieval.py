"""Retrieval metrics from a text x video score matrix: R@K, median and mean rank, both directions.

Text-to-video: each text has one correct video. Video-to-text: a video may have several correct
texts (MSR-VTT's 20 captions); its rank is that of its best-scored correct text. Ties are broken
pessimistically: an item's rank is 1 + the number of wrong items scored at least as high as it
(ties among correct items do not count), so a constant score matrix ranks every item last, never
first. Ranks start at 1; R@K is the percentage of queries with rank <= K.
"""

from __future__ import annotations

import numpy as np

from decembert_cli.errors import DecembertError

RECALLS = (1, 5, 10)


def ranks_text_to_video(scores: np.ndarray, video_of_text: np.ndarray) -> np.ndarray:
    """(T,) rank of each text's video among all videos; `scores` (T, V), `video_of_text` (T,) ints."""
    scores, video_of_text = _check(scores, video_of_text)
    correct = scores[np.arange(len(scores)), video_of_text]  # (T,)
    at_least = scores >= correct[:, None]  # (T, V)
    at_least[np.arange(len(scores)), video_of_text] = False
    return 1 + at_least.sum(axis=1)


def ranks_video_to_text(scores: np.ndarray, video_of_text: np.ndarray) -> np.ndarray:
    """(V',) rank of each video's best correct text among all texts, for the V' videos that have texts."""
    scores, video_of_text = _check(scores, video_of_text)
    videos = np.unique(video_of_text)
    by_video = scores.T[videos]  # (V', T)
    is_correct = video_of_text[None, :] == videos[:, None]  # (V', T)
    best = np.where(is_correct, by_video, -np.inf).max(axis=1)  # (V',)
    return 1 + ((by_video >= best[:, None]) & ~is_correct).sum(axis=1)


def summarise(ranks: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (%), median and mean rank of 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": float(100.0 * (ranks <= k).mean()) for k in RECALLS}
    out["MedR"] = float(np.median(ranks))
    out["MeanR"] = float(ranks.mean())
    return out


def retrieval_metrics(scores: np.ndarray, video_of_text: np.ndarray) -> dict[str, float]:
    """Both directions: {"t2v_R@1", ..., "t2v_MedR", "t2v_MeanR", "v2t_R@1", ...}."""
    t2v = summarise(ranks_text_to_video(scores, video_of_text))
    v2t = summarise(ranks_video_to_text(scores, video_of_text))
    return {**{f"t2v_{k}": v for k, v in t2v.items()}, **{f"v2t_{k}": v for k, v in v2t.items()}}


def _check(scores: np.ndarray, video_of_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    video_of_text = np.asarray(video_of_text, dtype=np.int64)
    if scores.ndim != 2 or video_of_text.shape != (scores.shape[0],):
        raise DecembertError(
            "retrieval scores must be (texts, videos) with one video per text; "
            f"got {scores.shape} and {video_of_text.shape}"
        )
    if len(video_of_text) and (video_of_text.min() < 0 or video_of_text.max() >= scores.shape[1]):
        raise DecembertError(f"a text's video index is outside the {scores.shape[1]} videos")
    if np.isnan(scores).any():
        raise DecembertError("retrieval scores contain NaN (a diverged model?); nothing can be ranked")
    return scores, video_of_text
